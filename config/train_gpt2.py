# Pretrain GPT-2 small (124M) from scratch on OpenWebText.
#
#   python data/openwebtext/prepare.py          # ~9B tokens, ~17 GB on disk; takes hours
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py   # 8 GPUs
#   python train.py config/train_gpt2.py                                    # 1 GPU, same run, 8x longer
#
# ~0.5M tokens per step, as GPT-3 Small used (Brown et al. 2020, Table 2.1):
# 16 sequences x 1024 tokens x 32 micro-steps = 524,288. The 32 micro-steps are
# shared by the processes (4 each on 8 GPUs), so the run is the same on 1 or 8.
# 19,073 steps is 10B tokens, the length of the llm.c GPT-2 (124M) reproduction.
# On a 12 GB card use --batch_size=4 --gradient_accumulation_steps=128 (same tokens per step).

init_from = "scratch"
dataset = "openwebtext"
out_dir = "out-gpt2"

n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
dropout = 0.0
bias = True
pad_vocab_multiple = 64  # 50304 rows: friendlier matmul shapes; padded ids are never predicted

batch_size = 16
gradient_accumulation_steps = 32

# GPT-3 Small's recipe: peak 6e-4, betas (0.9, 0.95), weight decay 0.1, clip 1.0,
# cosine to 10% of the peak (Brown et al. 2020, App. B).
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 700
max_iters = 19073
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

eval_interval = 500
eval_iters = 100
log_interval = 10
