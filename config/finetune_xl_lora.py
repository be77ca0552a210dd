# Fine-tune GPT-2 XL (1.56B) with LoRA adapters on one 12 GB GPU (e.g. an RTX 4070 Ti).
#
#   python train.py config/finetune_xl_lora.py
#   python sample.py --init_from=out-shakespeare-xl-lora --start="ROMEO:"
#   python -m nanogpt2.export out-shakespeare-xl-lora hf-xl-merged          # adapters merged into the weights
#   python -m nanogpt2.export --peft out-shakespeare-xl-lora peft-adapter   # the adapters alone, for PEFT
#
# LoRA (Hu et al. 2021) freezes the 1.56B weights, here held in bf16 (3.1 GB), and trains a rank-16 update
# beside each attention matrix: 7.4M parameters, whose fp32 weights, gradients and AdamW moments take 0.12 GB,
# and a checkpoint of about 90 MB instead of 19 GB. The frozen base needs no gradients or moments, so the
# activations of two 1024-token sequences fit beside it without checkpointing, the cheapest recipe
# python -m nanogpt2.flops --model=gpt2-xl --finetune --gpu=4070ti --dropout=0.1 --fit lists (0.70x the matmul work of
# full fine-tuning: no weight gradients for the base). Predicted peak: 8.40 GiB allocated, 9.32 GiB with allocator
# slack and the CUDA context (... --batch-size=2 --grad-accum=16 --lora-rank=16 --lora-base-dtype=bfloat16).
# Traced on fake tensors: the same (bench/memory.py --fake --cases=xl-lora-b2).
# To train every weight instead, see config/finetune_xl_full.py.

init_from = "gpt2-xl"
dataset = "shakespeare"
out_dir = "out-shakespeare-xl-lora"

lora_rank = 16
lora_alpha = 32.0
lora_targets = "attn"
lora_base_dtype = "bfloat16"

block_size = 1024
batch_size = 2
gradient_accumulation_steps = 16  # 32K tokens per step

learning_rate = 2e-4  # adapters start at zero and need a larger rate than full fine-tuning
min_lr = 2e-5
warmup_iters = 20
max_iters = 200
dropout = 0.1

eval_interval = 20
eval_iters = 40
log_interval = 5
