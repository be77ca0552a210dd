# Fine-tune GPT-2 large (774M) on Shakespeare, every weight, on one 12 GB GPU (e.g. an RTX 4070 Ti).
#
#   pip install 'nanogpt2[lowbit]'      # torchao: 8-bit AdamW with stochastic rounding of bf16 weights
#   python train.py config/finetune_large.py
#
# Plain AdamW needs 16 bytes per parameter, 11.5 GiB for gpt2-large before any activation: it cannot fit.
# The calculator lists what does, cheapest first:
#   python -m nanogpt2.flops --model=gpt2-large --finetune --gpu=4070ti --grad-accum=16 --dropout=0.1 --fit
# and this is its cheapest recipe that trains every weight: bf16 weights and gradients with 8-bit AdamW moments
# (about 6 bytes per parameter instead of 16), 2 sequences x 1024 tokens per micro-step, 16 micro-steps (32K
# tokens per step), no recomputation. Predicted peak: 9.04 GiB allocated, 9.99 GiB with allocator slack and
# the CUDA context, of the 11.7 GiB a 12 GB card reports (python -m nanogpt2.flops --model=gpt2-large --finetune
# --gpu=4070ti --batch-size=2 --grad-accum=16 --dropout=0.1 --optimizer=adamw8bit --param-dtype=bfloat16);
# bench/memory.py --fake --cases=large-bf16 traces the same.
# The earlier recipe (fp32 weights, 8-bit AdamW, activation checkpointing) takes 1.31x the compute, and compiled
# it peaked too close to a real 12 GB card's limit (bench/README.md has the GPU record).

init_from = "gpt2-large"
dataset = "shakespeare"
out_dir = "out-shakespeare-large"

block_size = 1024
batch_size = 2
gradient_accumulation_steps = 16
param_dtype = "bfloat16"
optimizer = "adamw8bit"

learning_rate = 1.5e-5
min_lr = 1.5e-6
warmup_iters = 20
max_iters = 200
dropout = 0.1

eval_interval = 20
eval_iters = 40
log_interval = 5
