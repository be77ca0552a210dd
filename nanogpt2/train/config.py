"""Every setting of a training run, with its default and what it does.

`python train.py config/x.py --key=value` fills this dataclass (see
nanogpt2/common/configurator.py for the rules); `python train.py --help` prints it.
The resolved values are written to `out_dir/config.json` and into every
checkpoint, so a run can always be traced back to exactly what it used.
"""

from __future__ import annotations

from dataclasses import dataclass

from nanogpt2.errors import UserError, check_positive_int
from nanogpt2.model_config import GPT2_SIZES, lora_layers


@dataclass
class TrainConfig:
    # -- where from, where to -----------------------------------------------------
    out_dir: str = "out"
    """Folder for checkpoints (ckpt.pt latest, best.pt best validation), config.json and metrics.jsonl."""

    overwrite: bool = False
    """A new run into an out_dir that holds another run's checkpoints or metrics is refused; True removes that
    run's ckpt.pt, best.pt, metrics.jsonl and config.json first. (init_from=resume continues a run instead.)"""

    init_from: str = "scratch"
    """scratch (random weights), resume (continue from out_dir/ckpt.pt), a GPT-2 name (gpt2, gpt2-medium,
    gpt2-large, gpt2-xl), a local Hugging Face GPT-2 directory, another run's out_dir or checkpoint file
    (a fine-tune of a fine-tune: its best.pt, else ckpt.pt; a LoRA run's adapters merged in), or a PEFT LoRA
    adapter folder (merged into its base, see base)."""

    base: str = ""
    """With init_from=a PEFT LoRA adapter folder: the model it was trained on (a GPT-2 name, a Hugging Face folder or a
    run). Empty: the base its adapter_config.json names (base_model_name_or_path)."""

    dataset: str = "shakespeare"
    """A prepared dataset: a name under data/ (data/NAME/train.bin, val.bin) or a path to such a folder.
    A named dataset with a recipe (data/NAME/prepare.py) but no token files is prepared first."""

    # -- model shape (scratch only; a pretrained model brings its own) ---------------
    n_layer: int | None = None
    """Transformer blocks. None: 12 for scratch (GPT-2 small), or the pretrained model's."""

    n_head: int | None = None
    """Attention heads per block. None: 12 for scratch, or the pretrained model's."""

    n_embd: int | None = None
    """Embedding width. None: 768 for scratch, or the pretrained model's."""

    block_size: int = 1024
    """Context length in tokens. A pretrained GPT-2 allows at most 1024 (smaller crops its position table)."""

    dropout: float = 0.0
    """Dropout probability (0.0 for large pretraining runs; 0.1-0.2 helps small fine-tunes)."""

    bias: bool = True
    """Biases in Linear and LayerNorm layers (scratch only; GPT-2's weights have them)."""

    pad_vocab_multiple: int | None = None
    """Round the vocabulary up to a multiple of this for faster GPU matmuls. None: 64 for scratch
    training on CUDA (50257 -> 50304), 1 on other devices and for pretrained weights."""

    # -- batch ------------------------------------------------------------------------
    batch_size: int = 12
    """Sequences per micro-step on each GPU (lower it if you run out of memory)."""

    gradient_accumulation_steps: int = 1
    """Micro-steps per optimizer step, summed over all processes (divided among them under torchrun).
    Tokens per step = batch_size * block_size * gradient_accumulation_steps."""

    # -- optimizer ----------------------------------------------------------------------
    learning_rate: float = 6e-4
    """Peak learning rate, reached after warmup."""

    min_lr: float | None = None
    """Learning rate at the end of the cosine decay. None: learning_rate / 10 (Chinchilla, Hoffmann et al. 2022)."""

    lr_schedule: str = "cosine"
    """cosine (warmup, then cosine decay to min_lr), constant (warmup, then flat) or wsd (warmup, stable, decay:
    flat at learning_rate, then a straight line down to min_lr over the last cooldown_frac of lr_decay_iters)."""

    cooldown_frac: float = 0.2
    """lr_schedule=wsd: the share of lr_decay_iters (max_iters) spent cooling down to min_lr at the end."""

    warmup_iters: int = 100
    """Steps of linear warmup from 0 to learning_rate."""

    lr_decay_iters: int | None = None
    """Step at which the cosine (or wsd's cooldown) reaches min_lr. None: max_iters."""

    loss_mask: bool | None = None
    """Pair data (data/prepare.py --prompt_column ... or --chat): train only on the completions and the
    <|endoftext|> after them, the mean over those tokens. None: on for pair data; False: every token is a target
    (as for plain text). Plain text has no mask: every token is a target."""

    example_masking: bool | None = None
    """Pair data: attention stays inside each packed example, and positions restart at 0 for each, as when the
    model later sees one prompt alone. None: on for pair data; False: examples in a window see each other."""

    doc_aligned: bool = False
    """Plain text: start every training window at an <|endoftext|>, so its first target is a document's first
    token (nanogpt2/data/documents.py). False: windows start anywhere, as in nanoGPT. Evaluation keeps plain
    windows, so that the two compare on the same ones."""

    doc_masking: bool = False
    """Plain text: attention does not cross an <|endoftext|> inside a window, and positions restart at each one:
    every document is computed as if alone, in training and evaluation alike (pair data: example_masking)."""

    lora_rank: int = 0
    """LoRA (Hu et al. 2021): train a rank-r update beside each frozen weight matrix of lora_targets instead of
    every weight. 0: off (full fine-tuning). 8-16 is typical; needs init_from=a GPT-2 name or folder."""

    lora_alpha: float = 32.0
    """LoRA's scale: the update is multiplied by lora_alpha / lora_rank."""

    lora_dropout: float = 0.0
    """Dropout on the input of the LoRA path only."""

    lora_targets: str = "attn"
    """attn: the attention's c_attn and c_proj (as in the LoRA paper). all: also the MLP's c_fc and c_proj. c_attn:
    that one alone (PEFT's default for GPT-2). Or any of the four joined by commas: attn.c_attn,mlp.c_proj."""

    lora_base_dtype: str = "auto"
    """dtype of the frozen base weights: float32, bfloat16 (half the memory), or auto (bfloat16 when the run's
    dtype is bfloat16, else float32). The adapters are always float32."""

    checkpointing: bool = False
    """Activation checkpointing: keep only each block's input and recompute the block in the backward pass.
    Roughly a third more compute for much less activation memory (python -m nanogpt2.flops ... --checkpointing
    shows how much); dropout masks are replayed, so the loss and gradients are those of a plain run."""

    loss_chunk_tokens: int = 0
    """0: the LM head and loss over the whole micro-batch at once (fastest). N: N token positions at a time,
    recomputed in backward, so the (tokens x 50,257) logits never exist whole: less memory, one more LM-head
    matmul. The loss and gradients are the plain path's. Try 1024-4096 when the logits are the peak."""

    optimizer: str = "adamw"
    """adamw: PyTorch's AdamW, fp32 moments (8 bytes per parameter). adamw8bit: torchao's AdamW8bit,
    8-bit block-wise quantized moments (~2 bytes per parameter; pip install 'nanogpt2[lowbit]'). muon:
    torch.optim.Muon for the blocks' weight matrices (orthogonalized momentum, 4 bytes per parameter) and
    AdamW for the embeddings, biases and gains (nanogpt2/train/muon.py; torch >= 2.9)."""

    muon_lr: float | None = None
    """optimizer=muon: the peak rate of the block matrices, scaled per matrix to AdamW's update size
    (adjust_lr_fn="match_rms_adamw"), so AdamW's rate carries over. None: learning_rate. The schedule applies."""

    muon_weight_decay: float | None = None
    """optimizer=muon: decoupled weight decay of the block matrices. None: weight_decay."""

    muon_momentum: float = 0.95
    """optimizer=muon: the momentum of Muon's gradient average (Nesterov), as in Jordan et al. 2024."""

    param_dtype: str = "float32"
    """float32: parameters and gradients in fp32, computed in the run's dtype by autocast (mixed precision).
    bfloat16: parameters and gradients held in bf16 (2 + 2 bytes per parameter instead of 4 + 4), for models
    too big for a card otherwise (gpt2-xl on 12 GB). Needs optimizer=adamw8bit, whose update rounds the bf16
    weights stochastically (plain rounding loses every update below half a bf16 step); computes in bf16."""

    stochastic_rounding: bool = True
    """With param_dtype=bfloat16: round each updated weight up or down at random, in proportion to how close
    it is (Zamirai et al. 2020), so small updates survive on average. False rounds to nearest, which stalls
    fine-tuning: there only to measure why (bench/bf16_quality.py)."""

    optimizer_in_backward: bool = False
    """Update each parameter during the backward pass, as soon as its gradient is complete, and free that
    gradient at once, so that the model's gradients never all exist together (2 or 4 bytes per parameter
    less at the peak). Needs gradient_accumulation_steps=1, grad_clip=0 (a global norm needs every gradient
    at once) and compile off (a compiled backward returns all gradients together); one process."""

    weight_decay: float = 0.1
    """AdamW decoupled weight decay (Loshchilov & Hutter 2019) on every matrix and both embedding tables
    (token and position), as nanoGPT does; none on biases or LayerNorm gains (nanogpt2/train/optim.py)."""

    beta1: float = 0.9
    """AdamW beta1."""

    beta2: float = 0.95
    """AdamW beta2 (0.95 as in GPT-3, Brown et al. 2020, is steadier than 0.999 for LMs)."""

    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 turns clipping off."""

    # -- how long -------------------------------------------------------------------------
    max_iters: int = 5000
    """Optimizer steps to train for."""

    max_hours: float | None = None
    """Stop (and save) after this much wall-clock time, even before max_iters."""

    # -- evaluation and checkpoints ----------------------------------------------------------
    eval_interval: int = 250
    """Evaluate (and save ckpt.pt, plus best.pt on a new best validation loss) every this many steps. 0: never
    evaluate (a dataset prepared with val_fraction=0), saving ckpt.pt at the end; there is then no best.pt."""

    eval_iters: int | None = 100
    """Batches per split for each evaluation. None: the whole validation split, exactly."""

    eval_only: bool = False
    """Only report the loss and perplexity of init_from's model on the dataset, then exit. Writes nothing:
    out_dir is neither created nor touched."""

    eval_tasks: str = ""
    """Benchmarks scored at every evaluation besides the loss: comma-separated TASK:DATA pairs of
    `python -m nanogpt2.evaluate`'s tasks, e.g. hellaswag:hellaswag_val.jsonl,perplexity:held_out.txt
    (lambada alone uses its checksum-verified download). Figures go to metrics.jsonl and wandb."""

    eval_tasks_limit: int | None = 500
    """Examples per benchmark at each evaluation (tokens for perplexity); None: all of them."""

    # -- logging ------------------------------------------------------------------------------
    log_interval: int = 10
    """Print and record loss, lr, tokens/s, MFU and memory every this many steps."""

    plot: bool | None = None
    """Draw out_dir/curves.png (loss, learning rate, tokens/s; nanogpt2/plot.py, needs matplotlib). True: at every
    evaluation and at the end. None: so too when matplotlib is installed, at most once a minute, so that short
    runs pay nothing. False: never (python -m nanogpt2.plot RUN draws it any time)."""

    wandb_log: bool = False
    """Also log to Weights & Biases (pip install wandb; WANDB_MODE=offline works without a network)."""

    wandb_project: str = "nanogpt2"
    """Weights & Biases project name."""

    wandb_run_name: str | None = None
    """Weights & Biases run name. None: out_dir's name."""

    peak_tflops: float | None = None
    """Your GPU's dense bf16 peak in TFLOP/s, for MFU on a GPU the built-in table does not know."""

    # -- system -----------------------------------------------------------------------------
    device: str = "auto"
    """auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps. Under torchrun each process takes cuda:LOCAL_RANK."""

    dtype: str = "auto"
    """auto (bfloat16 where supported, else float16 with loss scaling on CUDA; float32 on CPU/MPS), float32,
    bfloat16 or float16."""

    compile: bool | None = None
    """torch.compile the model. None: on for CUDA when Triton is available, off elsewhere."""

    parallel: str = "ddp"
    """How torchrun's processes share the model. ddp: each holds all of it (weights, gradients, AdamW moments)
    and gradients are averaged. fsdp: each holds 1/N of them and gathers a block's weights just before the
    block runs (FSDP2; nanogpt2/train/fsdp.py), with sharded checkpoint folders that resume on any number of
    processes. fsdp needs torchrun, even for one process (docs/distributed.md)."""

    seed: int = 1337
    """Seed for weights, dropout and batch sampling; the same seed gives the same run."""

    def __post_init__(self) -> None:
        self._check_numbers()
        self._check_init_from()
        if self.base and self.init_from == "scratch":  # (a resumed run keeps the base it was started with)
            raise UserError(f"base={self.base!r} is the base of a PEFT adapter: set init_from to the adapter's folder")
        if self.lora_rank:
            check_positive_int("lora_rank", self.lora_rank)
            lora_layers(self.lora_targets)  # one line naming the choices when it is neither a set nor layers
            if self.lora_base_dtype not in ("auto", "float32", "bfloat16"):
                raise UserError(f"lora_base_dtype={self.lora_base_dtype!r}: use auto, float32 or bfloat16")
        if self.optimizer not in ("adamw", "adamw8bit", "muon"):
            raise UserError(f"optimizer={self.optimizer!r}: use adamw, adamw8bit or muon")
        if self.lr_schedule not in ("cosine", "constant", "wsd"):
            raise UserError(f"lr_schedule={self.lr_schedule!r}: use cosine, constant or wsd")
        if not 0.0 < self.cooldown_frac <= 1.0:
            raise UserError(f"cooldown_frac must be in (0, 1], got {self.cooldown_frac}")
        self._check_muon()
        self._check_param_dtype()
        self._check_optimizer_in_backward()
        self._check_parallel()

    def _check_numbers(self) -> None:
        """Sizes are positive integers, rates and probabilities in their ranges."""
        positive = ["block_size", "batch_size", "gradient_accumulation_steps", "max_iters"]
        optional = ["n_layer", "n_head", "n_embd", "pad_vocab_multiple", "eval_iters", "lr_decay_iters"]
        for name in [*positive, "log_interval", *optional]:
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.loss_chunk_tokens:
            check_positive_int("loss_chunk_tokens", self.loss_chunk_tokens)
        for name in ("warmup_iters", "weight_decay", "grad_clip", "learning_rate", "eval_interval"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_lr is not None and not 0 <= self.min_lr <= self.learning_rate:
            raise UserError(f"min_lr={self.min_lr} must be between 0 and learning_rate={self.learning_rate}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise UserError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.max_hours is not None and self.max_hours <= 0:
            raise UserError(f"max_hours must be positive, got {self.max_hours}")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise UserError(f"peak_tflops must be positive, got {self.peak_tflops}")

    def _check_init_from(self) -> None:
        """init_from names weights (nanogpt2/loading.py), and pretrained weights fix the model's shape."""
        if self.lora_rank and self.init_from == "scratch":
            raise UserError(
                f"lora_rank={self.lora_rank} adapts pretrained weights: set init_from to a GPT-2 "
                f"name or folder (or lora_rank=0 to train every weight)"
            )
        if not self.pretrained:
            return
        if self.init_from not in GPT2_SIZES and not _looks_like_path(self.init_from):
            raise UserError(
                f"init_from={self.init_from!r} is not a GPT-2 name or a folder; use scratch, resume, one of "
                f"{', '.join(GPT2_SIZES)}, a Hugging Face GPT-2 folder, or a training run's out_dir"
            )
        for name in ("n_layer", "n_head", "n_embd"):
            if getattr(self, name) is not None:
                raise UserError(
                    f"{name} is fixed by the pretrained weights of {self.init_from!r}; remove it from the config"
                )
        if self.pad_vocab_multiple not in (None, 1):
            raise UserError("pad_vocab_multiple applies to scratch training only; pretrained weights keep their rows")
        if self.block_size > 1024 and self.init_from in GPT2_SIZES:
            raise UserError(
                f"block_size={self.block_size} is above {self.init_from}'s 1024 positions; use block_size <= 1024"
            )

    def _check_muon(self) -> None:
        if self.optimizer != "muon":
            for name in ("muon_lr", "muon_weight_decay"):
                if getattr(self, name) is not None:
                    raise UserError(f"{name} applies to optimizer=muon only; drop it or set optimizer=muon")
            return
        for name in ("muon_lr", "muon_weight_decay"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.muon_momentum < 1.0:
            raise UserError(f"muon_momentum must be in [0, 1), got {self.muon_momentum}")
        refused = {
            "lora_rank": "LoRA trains rank-r factors, not the full matrices Muon orthogonalizes: use optimizer=adamw",
            "optimizer_in_backward": "Muon steps every matrix from its whole momentum, not inside backward",
        }
        for name, why in refused.items():
            if getattr(self, name):
                raise UserError(f"optimizer=muon with {name}={getattr(self, name)}: {why}")

    def _check_optimizer_in_backward(self) -> None:
        if not self.optimizer_in_backward:
            return
        needs = {"gradient_accumulation_steps": (self.gradient_accumulation_steps, 1), "grad_clip": (self.grad_clip, 0)}
        for name, (value, wanted) in needs.items():
            if value != wanted:
                raise UserError(
                    f"optimizer_in_backward=True updates each parameter during backward, so it needs "
                    f"{name}={wanted} (got {value}); drop optimizer_in_backward or set {name}={wanted}"
                )
        if self.compile:
            raise UserError(
                "optimizer_in_backward=True saves no memory under compile (a compiled backward returns every "
                "gradient at once): set compile=False, or drop optimizer_in_backward"
            )

    def _check_parallel(self) -> None:
        if self.parallel not in ("ddp", "fsdp"):
            raise UserError(f"parallel={self.parallel!r}: use ddp or fsdp")
        if self.parallel == "ddp":
            return
        refused = {  # what FSDP's sharded weights cannot do here, and why (docs/distributed.md)
            "lora_rank": "LoRA's frozen base fits one card already; train the adapters with parallel=ddp",
            "optimizer": "Muon orthogonalizes whole matrices and adamw8bit is not checked with shards: use adamw",
            "param_dtype": "sharding already divides fp32 weights by the processes; use param_dtype=float32",
            "optimizer_in_backward": "FSDP reduces each gradient across processes before any update; drop it",
            "eval_tasks": "benchmarks run on rank 0 alone; score best.pt afterwards with python -m nanogpt2.evaluate",
        }
        defaults = {"lora_rank": 0, "optimizer": "adamw", "param_dtype": "float32", "optimizer_in_backward": False}
        for name, why in refused.items():
            value = getattr(self, name)
            if value != defaults.get(name, ""):
                raise UserError(f"parallel=fsdp with {name}={value}: {why}")

    def _check_param_dtype(self) -> None:
        if self.param_dtype not in ("float32", "bfloat16"):
            raise UserError(f"param_dtype={self.param_dtype!r}: use float32 or bfloat16")
        if self.param_dtype == "float32":
            return
        if self.optimizer != "adamw8bit":
            raise UserError(
                "param_dtype=bfloat16 needs optimizer=adamw8bit: PyTorch's AdamW would round every bf16 update "
                "to nearest, and updates below half a bf16 step would vanish"
            )
        if self.dtype not in ("auto", "bfloat16"):
            raise UserError(f"param_dtype=bfloat16 computes in bfloat16: drop dtype={self.dtype} (or use auto)")
        if self.lora_rank:
            raise UserError(
                "param_dtype=bfloat16 is for training every weight; a LoRA run keeps fp32 adapters "
                "(its frozen base is bf16 by lora_base_dtype): drop param_dtype"
            )

    @property
    def compute_dtype(self) -> str:
        """The dtype setting the runtime resolves: bfloat16 parameters compute in bfloat16 on every device."""
        return "bfloat16" if self.param_dtype == "bfloat16" else self.dtype

    @property
    def pretrained(self) -> bool:
        """True when init_from names pretrained weights (a GPT-2 name or a local directory)."""
        return self.init_from not in ("scratch", "resume")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.block_size * self.gradient_accumulation_steps


def _looks_like_path(text: str) -> bool:
    """A local folder name rather than a model name: it exists, or it is written as a path."""
    from pathlib import Path

    return Path(text).expanduser().exists() or "/" in text or "\\" in text or text.startswith((".", "~"))
