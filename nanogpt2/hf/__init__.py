"""Hugging Face interoperability: transformers' GPT-2 layout and PEFT's LoRA adapters, both ways.

layout.py      the mapping between transformers' GPT-2 and ours: names, Conv1D transposes, config.json
pretrained.py  OpenAI's GPT-2 from the Hub, or a local Hugging Face folder, into a GPT
export.py      a GPT out as a transformers folder, with GPT-2's tokenizer files (`python -m nanogpt2.export`)
peft.py        LoRA adapters in PEFT's folder format, to and from nanogpt2/lora.py
"""
