# Fine-tune OpenAI's GPT-2 (124M) on Shakespeare, on one 12 GB GPU (e.g. an RTX 4070 Ti).
#
#   python train.py config/finetune_small.py
#   python sample.py --init_from=out-shakespeare --start="ROMEO:"
#
# The dataset is prepared on first use (data/shakespeare/prepare.py downloads a
# public-domain text; offline, run it with --input pointing at your own text).
# For your own data: python data/prepare.py --input my.txt --out data/mine
# and add --dataset=mine.

init_from = "gpt2"
dataset = "shakespeare"
out_dir = "out-shakespeare"

# Full GPT-2 context, 8 sequences x 1024 tokens per micro-step, 4 micro-steps: 32K tokens
# per step; micro-batch 8 was chosen over 4 for its MFU (bench/README.md has the GPU record).
# Without compile the memory model
# (python -m nanogpt2.flops --model=gpt2 --finetune --batch-size=8 --grad-accum=4 --dropout=0.1 --gpu=4070ti)
# puts the peak at 8.6 GiB allocated (weights, gradients and AdamW states 1.9 GiB, bf16 weight copies
# 0.2 GiB, activations 5.0 GiB, logits and the loss gradient 1.5 GiB), 9.6 GiB with allocator slack and
# the CUDA context: it fits the 11.7 GiB a 12 GB card reports, with room for a desktop display.
block_size = 1024
batch_size = 8
gradient_accumulation_steps = 4

# Small, warmed-up learning rate: the weights are already good, we only nudge them.
learning_rate = 3e-5
min_lr = 3e-6
warmup_iters = 20
max_iters = 300
weight_decay = 0.1
dropout = 0.1  # a few MB of text overfits quickly; dropout slows that down

# Evaluate often and keep the best: best.pt is the checkpoint with the lowest val loss.
eval_interval = 20
eval_iters = 40
log_interval = 5

# dtype and compile default to auto: bfloat16 and torch.compile on a recent NVIDIA GPU.
