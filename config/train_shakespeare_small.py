# A small GPT from scratch on Shakespeare that visibly learns on a laptop CPU in a few minutes.
#
#   python train.py config/train_shakespeare_small.py
#   python sample.py --init_from=out-shakespeare-small --start="KING:"
#
# 4 layers of width 128 (~7M parameters, most of them the 50257-token embedding).
# Validation loss falls from ~10.8 (uniform over GPT-2's vocabulary) to around 6
# within 300 steps; after a few thousand, the samples are recognisably Shakespeare
# (on a GPU, raise max_iters and the model size).

init_from = "scratch"
dataset = "shakespeare"
out_dir = "out-shakespeare-small"

n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
dropout = 0.0

batch_size = 16
gradient_accumulation_steps = 1

learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 20
max_iters = 300
weight_decay = 0.1

eval_interval = 50
eval_iters = 10
log_interval = 10

device = "auto"
compile = False  # compiling takes longer than this whole run on a CPU
