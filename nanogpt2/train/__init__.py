"""Training: `python train.py` from its settings to its last checkpoint.

    config.py       TrainConfig: every setting, with its default and meaning
    cli.py          train.py's command line (--help before importing PyTorch, exit codes)
    setup.py        build_run: the run's parts, stage by stage, before the first step
    trainer.py      the loop: accumulation, clipping, the optimizer step, evaluation, logging, stopping
    optim.py        AdamW (fp32 or 8-bit moments), the update in backward, the learning-rate schedule
    checkpoint.py   checkpoint files: written atomically, read safely
    resume.py       exact resume: the saved settings, random state and batch position put back
    distributed.py  torchrun's processes: DDP, all-reduce, barriers
    metrics.py      metrics.jsonl, wandb, the progress bar, MFU's peak, the run's header

Nothing is imported here, so that `import nanogpt2.train.checkpoint` (sampling, export) pulls in
no trainer.
"""
