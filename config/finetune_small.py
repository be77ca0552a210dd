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

# Full GPT-2 context. 4 sequences x 1024 tokens per micro-step: the memory model
# (python -m nanogpt2.flops --model=gpt2 --finetune --batch-size=4 --gpu=4070ti)
# puts the peak near 6 GiB allocated (weights, grads and AdamW states 1.9 GiB,
# activations 2.1 GiB, logits and their gradient 1.9 GiB), leaving headroom on a
# 12 GB card that also drives a display; 8 micro-steps make 32K tokens per step.
block_size = 1024
batch_size = 4
gradient_accumulation_steps = 8

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
