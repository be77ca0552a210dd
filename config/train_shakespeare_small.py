# A small GPT from scratch on Shakespeare that visibly learns on a laptop CPU in a few minutes.
#
#   python train.py config/train_shakespeare_small.py
#   python sample.py --init_from=out-shakespeare-small --start="KING:"
#
# 4 layers of width 128 (7.2M parameters, 6.4M of them the 50257-token embedding).
# On 2 CPU cores it takes minutes, and the validation loss falls from 10.83 (uniform over
# GPT-2's vocabulary) to below 6. The samples then have Shakespeare's shape (speaker names,
# short verse lines) but little sense; on a GPU, raise max_iters, n_layer and n_embd.

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
