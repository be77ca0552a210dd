# Fine-tune GPT-2 large (774M) on Shakespeare, every weight, on one 12 GB GPU (e.g. an RTX 4070 Ti).
#
#   pip install 'nanogpt2[lowbit]'      # torchao, for the 8-bit AdamW below
#   python train.py config/finetune_large.py
#
# Plain AdamW needs 16 bytes per parameter, 11.5 GiB for gpt2-large before any activation: it cannot fit.
# The calculator lists what does:
#   python -m nanogpt2.flops --model=gpt2-large --finetune --gpu=4070ti --grad-accum=16 --dropout=0.1 --fit
# and this is its only recipe: 8-bit AdamW moments (1.8 GiB instead of 5.8) and activation checkpointing,
# 2 sequences x 1024 tokens per micro-step, 16 micro-steps (32K tokens per step). Predicted peak: 10.2 GiB
# allocated, 11.2 GiB with allocator slack and the CUDA context, of the 11.7 GiB a 12 GB card reports
# (python -m nanogpt2.flops --model=gpt2-large --finetune --gpu=4070ti --batch-size=2 --grad-accum=16
#  --dropout=0.1 --checkpointing --optimizer=adamw8bit). Close a desktop session's big windows first.

init_from = "gpt2-large"
dataset = "shakespeare"
out_dir = "out-shakespeare-large"

block_size = 1024
batch_size = 2
gradient_accumulation_steps = 16
checkpointing = True
optimizer = "adamw8bit"

learning_rate = 1.5e-5
min_lr = 1.5e-6
warmup_iters = 20
max_iters = 200
dropout = 0.1

eval_interval = 20
eval_iters = 40
log_interval = 5
