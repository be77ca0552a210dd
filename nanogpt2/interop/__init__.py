"""Files from other projects, read as ours: nanoGPT's checkpoints (nanogpt.py)."""
