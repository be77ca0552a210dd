# Fine-tune GPT-2 XL (1.56B), every weight, on one 12 GB GPU (e.g. an RTX 4070 Ti).
#
#   pip install 'nanogpt2[lowbit]'      # torchao: 8-bit AdamW with stochastic rounding of bf16 weights
#   python train.py config/finetune_xl_full.py
#
# fp32 weights, gradients and AdamW moments alone would take 16 bytes per parameter, 23 GiB. This recipe
# takes about 6: bf16 weights (2 B) and gradients (2 B, accumulated in bf16), 8-bit AdamW moments (~2 B; the
# embeddings' fp32), and activation checkpointing, with one 1024-token sequence per micro-step. The bf16
# weights are updated with stochastic rounding: rounded to nearest, most fine-tuning updates would vanish
# (bench/bf16_quality.py measures both).
# Predicted peak: 9.85 GiB allocated, 10.84 GiB with allocator slack and the CUDA context, of the 11.7 GiB a
# 12 GB card reports (python -m nanogpt2.flops --model=gpt2-xl --finetune --gpu=4070ti --batch-size=1
#  --grad-accum=32 --dropout=0.1 --checkpointing --optimizer=adamw8bit --param-dtype=bfloat16).
# Traced on fake tensors: the same (bench/memory.py --fake --cases=xl-full); bench/README.md has the GPU record.
# 3 GiB leaner still: --optimizer_in_backward=True --gradient_accumulation_steps=1 --grad_clip=0, at the price
# of 1K instead of 32K tokens per step (lower learning_rate to match) and no gradient clipping.
# For a smaller, faster fine-tune of the same model, config/finetune_xl_lora.py trains LoRA adapters.

init_from = "gpt2-xl"
dataset = "shakespeare"
out_dir = "out-shakespeare-xl"

block_size = 1024
batch_size = 1
gradient_accumulation_steps = 32  # 32K tokens per step
param_dtype = "bfloat16"
optimizer = "adamw8bit"
checkpointing = True
# Eager: the figures above are eager PyTorch's, and a checkpointed recipe has measured higher compiled than
# eager (bench/README.md), with little to spare on this card. Try compile=True once
# python bench/gpu.py --only=xl_full has measured it.
compile = False

learning_rate = 1e-5
min_lr = 1e-6
warmup_iters = 20
max_iters = 200
dropout = 0.1

eval_interval = 20
eval_iters = 40
log_interval = 5
