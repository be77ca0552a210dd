# Fine-tune GPT-2 medium (355M) on Shakespeare within 12 GB.
#
#   python train.py config/finetune_medium.py
#
# Memory: AdamW in mixed precision keeps fp32 weights, gradients and two moment
# buffers, 16 bytes per parameter: 355M x 16 B = 5.7 GB before any activation.
# Two 1024-token sequences per micro-step add about 3 GB of activations and
# logits in bf16, so the peak stays under 10 GB; 16 micro-steps make 32K tokens
# per step. Check your own card with: python -m nanogpt2.flops --model=gpt2-medium --finetune ...

init_from = "gpt2-medium"
dataset = "shakespeare"
out_dir = "out-shakespeare-medium"

block_size = 1024
batch_size = 2
gradient_accumulation_steps = 16

learning_rate = 2e-5
min_lr = 2e-6
warmup_iters = 20
max_iters = 200
dropout = 0.1

eval_interval = 20
eval_iters = 40
log_interval = 5
