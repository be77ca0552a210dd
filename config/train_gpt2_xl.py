# Pretrain GPT-2 XL (1.56B) from scratch on OpenWebText, on one 12 GB GPU (e.g. an RTX 4070 Ti).
#
#   pip install 'nanogpt2[lowbit]'
#   python data/openwebtext/prepare.py
#   python train.py config/train_gpt2_xl.py
#
# The memory recipe of config/finetune_xl_full.py (bf16 weights and gradients, 8-bit AdamW with stochastic
# rounding, activation checkpointing; one 1024-token sequence per micro-step) with GPT-3 XL's
# optimisation settings (Brown et al. 2020, Table 2.1: 1.3B parameters, 2e-4 peak learning rate, 1M tokens
# per step; here 0.5M as in config/train_gpt2.py) and 10B tokens, the length of the llm.c GPT-2 reproductions.
# Predicted peak 9.85 GiB allocated (bench/memory.py --fake --cases=xl-scratch traces the same; bench/README.md
# has the GPU record).
# How long: python -m nanogpt2.flops --model=gpt2-xl --tokens=10B --gpu=4070ti --fit says 37 days of plain
# compute at 40% MFU, 45 days with checkpointing's recomputation.

init_from = "scratch"
dataset = "openwebtext"
out_dir = "out-gpt2-xl"

n_layer = 48
n_head = 25
n_embd = 1600
block_size = 1024
dropout = 0.0
pad_vocab_multiple = 64  # 50304 rows

batch_size = 1
gradient_accumulation_steps = 512  # 524,288 tokens per step
param_dtype = "bfloat16"
optimizer = "adamw8bit"
checkpointing = True
# Eager: the figures above are eager PyTorch's, and a checkpointed recipe has measured higher compiled than
# eager (bench/README.md), with little to spare on this card. Try compile=True once
# python bench/gpu.py --only=xl_full has measured it.
compile = False

learning_rate = 2e-4
min_lr = 2e-5
warmup_iters = 700
max_iters = 19073  # 10B tokens
weight_decay = 0.1
grad_clip = 1.0

eval_interval = 500
eval_iters = 100
log_interval = 10
