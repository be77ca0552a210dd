"""The training loop.

One optimizer step, in the order the code below runs it:

    for each of the k micro-batches:          (gradient accumulation)
        forward under autocast -> loss / k    (so the k gradients sum to the mean)
        backward                              (DDP all-reduces on the last one only;
                                               FSDP reduce-scatters each one into the shards)
    clip the global gradient norm
    AdamW step at this step's learning rate   (optimizer_in_backward: each parameter's, during backward)

and around it: evaluation every eval_interval steps (train/val loss and
perplexity), checkpoints (latest, and best by validation loss), logging every
log_interval steps (loss, lr, tokens/s, MFU, memory, ETA), and clean stops on
max_iters, max_hours, Ctrl-C, or a loss that is no longer a number.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from nanogpt2.common.configurator import config_dict, save_config
from nanogpt2.common.files import why_failed
from nanogpt2.common.progress import format_duration, progress
from nanogpt2.errors import UserError
from nanogpt2.flops import mfu as model_flops_utilization
from nanogpt2.lora import adapter_state_dict
from nanogpt2.plot import CurvesDuringTraining
from nanogpt2.train import distributed as dist_utils
from nanogpt2.train.batches import exact_batches, random_batches
from nanogpt2.train.checkpoint import FORMAT_VERSION, LATEST, write_checkpoint
from nanogpt2.train.config import TrainConfig
from nanogpt2.train.fsdp import is_sharded, local
from nanogpt2.train.optim import clip_grad_norm, lr_at
from nanogpt2.train.resume import RunComplete, rng_state
from nanogpt2.train.run_dir import RunFolder, RunLock, check_new_run, remove_run_files
from nanogpt2.train.setup import Run, build_run
from nanogpt2.train.shards import remove_unused_shards, save_shards
from nanogpt2.train.stop import StopRequest
from nanogpt2.train.summary import run_summary, summary_lines

EVAL_SEED_OFFSET = 1_000_003  # evaluation batches come from their own stream, never the training one


class TrainingDiverged(UserError):
    """The loss or the weights stopped being finite numbers."""


def train(argv: Sequence[str] | TrainConfig | None = None) -> dict:
    """`python train.py ...`: parse the config, train (or evaluate), return a summary.

    summary["exit_code"] is what train.py exits with: 0 when the run finished (or had nothing left to
    do), 128 + the signal's number after a clean save on Ctrl-C (130) or SIGTERM (143), the shell's
    convention, so that a scheduler can tell a stopped run from a finished one."""
    try:
        run = build_run(argv)
    except RunComplete as done:
        print(done, flush=True)
        return {"step": None, "best_val_loss": None, "stopped_by": None, "exit_code": 0}
    try:
        trainer = Trainer(run)
    except BaseException:
        run.logger.close()
        dist_utils.shutdown()
        raise
    finished = False
    try:
        summary = trainer.evaluate_only() if trainer.cfg.eval_only else trainer.fit()
        finished = True
        return summary
    finally:
        trainer.close(failed=not finished)


class Trainer:
    """Drives a built Run (nanogpt2/train/setup.py): the loop, evaluation, checkpoints, logging."""

    def __init__(self, run: Run):
        self.cfg, self.dist, self.rt, self.out_dir = run.cfg, run.dist, run.rt, run.out_dir
        self.data, self.train_batches, self.local_accum = run.data, run.train_batches, run.local_accum
        self.raw_model, self.model, self.eval_model = run.raw_model, run.model, run.eval_model
        self.optimizer, self.scaler = run.optimizer, run.scaler
        self.step, self.best_val_loss, self.resumed = run.step, run.best_val_loss, run.resumed
        self.flops_per_token, self.peak_flops, self.logger = run.flops_per_token, run.peak_flops, run.logger
        self.eval_tasks, self.lora = run.eval_tasks, run.lora
        self.sharded = is_sharded(self.raw_model)  # parallel=fsdp (fsdp.py)
        self.min_lr = self.cfg.min_lr if self.cfg.min_lr is not None else self.cfg.learning_rate / 10
        self.folder = RunFolder(self.out_dir)
        self.curves = CurvesDuringTraining(self.out_dir, self.cfg.plot, time.time())
        self.lock = RunLock(self.out_dir)
        if self.dist.is_main and not self.cfg.eval_only:  # eval_only writes nothing into out_dir
            try:
                self._take_out_dir()
            except BaseException:
                self.lock.release()
                self.folder.clean_failed_start()
                raise

    def _take_out_dir(self) -> None:
        """Create out_dir (only now: a run that fails to set up leaves no folder behind), hold its lock, and
        clear an earlier run's files (--overwrite=True) or the rows a crash logged past the checkpoint."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create out_dir {self.out_dir}: {why_failed(e)}; choose another out_dir") from None
        note = self.lock.acquire()
        if note:
            self.say(note)
        if not self.resumed:
            check_new_run(self.out_dir, self.cfg.overwrite)  # again: another run may have written since set-up
            removed = remove_run_files(self.out_dir) if self.cfg.overwrite else []
            if removed:
                self.say(f"note: --overwrite=True: removed the earlier run's {', '.join(removed)} from {self.out_dir}")
        else:  # rows a crash left past the checkpoint are redone now
            dropped = self.logger.drop_rows_after(self.step)
            if dropped:
                self.say(
                    f"note: dropped {dropped} metrics.jsonl row(s) logged after step {self.step}, "
                    f"the checkpoint's: those steps are trained again"
                )

    # -- the loop -----------------------------------------------------------------

    def fit(self) -> dict:
        cfg = self.cfg
        if self.dist.is_main:
            save_config(cfg, self.out_dir / "config.json")
        start_time, start_step = time.time(), self.step
        self._last_log = (self.step, start_time)
        last_eval = self.step if self.resumed else None  # a resumed run was evaluated where it stopped
        stopped_by = None
        with StopRequest(say=self.say) as stop:
            evaluating = cfg.eval_interval > 0  # 0: no evaluation (a dataset without a val split)
            while self.step < cfg.max_iters:
                if evaluating and self.step % cfg.eval_interval == 0 and self.step != last_eval:
                    self.evaluate_and_checkpoint()
                    last_eval = self.step
                lr = self.lr(self.step)
                loss = self.train_step([self.train_batches.next_batch() for _ in range(self.local_accum)], lr)
                self.step += 1
                if self.step % cfg.log_interval == 0 or self.step == cfg.max_iters:
                    self._log_step(loss, lr)
                out_of_time = cfg.max_hours is not None and time.time() - start_time > cfg.max_hours * 3600
                if dist_utils.any_process(stop.requested is not None or out_of_time, self.rt.device):
                    stopped_by = "signal" if stop.requested is not None else "max_hours"
                    break
            if stopped_by == "signal" or not evaluating:  # be quick: save where we are, no evaluation
                self.save_checkpoint(best=False)
            elif self.step != last_eval:
                self.evaluate_and_checkpoint()
        if stopped_by is not None:
            why = "on request" if stopped_by == "signal" else f"after max_hours={cfg.max_hours}"
            self.say(f"stopped {why} at step {self.step}; continue with --init_from=resume --out_dir={cfg.out_dir}")
        if self.dist.is_main:  # what the run reached, where its files are, what to run next (summary.py)
            picture = self.curves.maybe_draw(time.time(), self.say)
            summary = run_summary(self.out_dir, self.step, cfg.tokens_per_step, start_step, time.time() - start_time)
            summary["plot"] = str(picture) if picture else None
            self.logger.record("summary", summary.pop("step"), **summary)
            for line in summary_lines(summary, self.step):
                self.say(line)
        signum = stop.requested if stopped_by == "signal" else None
        return {
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "stopped_by": stopped_by,
            "exit_code": 128 + signum if signum else 0,
        }

    def lr(self, step: int) -> float:
        cfg = self.cfg
        return lr_at(
            step,
            learning_rate=cfg.learning_rate,
            min_lr=self.min_lr,
            warmup_iters=cfg.warmup_iters,
            decay_iters=cfg.lr_decay_iters or cfg.max_iters,
            schedule=cfg.lr_schedule,
            cooldown_frac=cfg.cooldown_frac,
        )

    def train_step(self, batches: list[tuple], lr: float) -> torch.Tensor:
        """One optimizer step over the micro-batches; returns their mean loss (on this rank)."""
        self.set_lr(lr)  # before backward: with optimizer_in_backward the parameters are updated during it
        loss = self.accumulate_gradients(batches)
        self.optimizer_step()
        return loss

    def accumulate_gradients(self, batches: list[tuple]) -> torch.Tensor:
        """Forward and backward over each micro-batch (x, y) or, for pair data, (x, y, examples); .grad ends up
        holding the gradient of the mean loss over the step's targets."""
        k = len(batches)
        weights = self.micro_batch_weights(batches)
        loss_sum = torch.zeros((), device=self.rt.device)
        for i, (x, y, *examples) in enumerate(batches):
            # DDP: skip the gradients' all-reduce on all but the last micro-step: they only need averaging
            # across processes once they are complete. FSDP reduce-scatters every micro-step's gradients into
            # the shards instead: skipping it would hold every gradient whole until the last (fsdp.py).
            sync = i == k - 1 or not isinstance(self.model, DDP)
            no_sync = nullcontext() if sync else self.model.no_sync()
            with no_sync, self.rt.autocast():
                # Keep only the loss: holding the (B, T, V) logits through backward would cost 2*B*T*V bytes.
                loss = self.model(x, y, examples=examples[0] if examples else None)[1]
                loss = loss / k if weights is None else loss * weights[i]  # the step's mean from the micro-means
            self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        return loss_sum

    def micro_batch_weights(self, batches: list[tuple]) -> list[float] | None:
        """Pair data: each micro-batch's share of the step's targets, which vary with the prompts, so that the
        loss is the mean over every completion token of the step, on every process (DDP then averages the
        processes' gradients: each share is taken of the targets of all of them, times their number).
        None for plain text, where every micro-batch has the same targets and the share is 1/k."""
        if not self.data.window:
            return None
        counts = torch.tensor([float((y != -1).sum()) for _, y, *_ in batches], device=self.rt.device)
        total = dist_utils.all_reduce_sum(counts.sum().clone())
        return (counts * self.dist.world_size / total.clamp(min=1)).tolist()

    def optimizer_step(self) -> None:
        """Clip, step AdamW at the learning rate set_lr gave it, and clear the gradients (with
        optimizer_in_backward, backward has done all three: clipping is refused there, and step and
        zero_grad have nothing left)."""
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the fp16-scaled ones
            clip_grad_norm(self.raw_model.parameters(), self.cfg.grad_clip)  # fp32 norms for bf16 gradients too
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def set_lr(self, lr: float) -> None:
        """The learning rate of every parameter group from now on (times its lr_scale: Muon's own peak rate)."""
        for group in self.optimizer.param_groups:
            rate = lr * group.get("lr_scale", 1.0)
            if torch.is_tensor(group["lr"]):  # torchao's low-bit AdamW keeps lr as a tensor for its compiled step
                group["lr"].fill_(rate)
            else:
                group["lr"] = rate

    # -- evaluation ---------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, splits: Sequence[str] = ("train", "val"), show_progress: bool = False) -> dict[str, float]:
        """Mean loss per split: over eval_iters random batches, or (eval_iters=None) every token of it."""
        cfg, d = self.cfg, self.dist
        self.eval_model.eval()
        losses = {}
        for split in splits:
            if cfg.eval_iters is None:  # sharded: every rank runs as many forward passes (each gathers weights)
                n, batches = exact_batches(cfg, self.data, split, self.rt, d, same_count=self.sharded)
            else:
                n = math.ceil(cfg.eval_iters / d.world_size)
                stream = random_batches(cfg, self.data, split, cfg.seed + EVAL_SEED_OFFSET, self.rt, d, training=False)
                batches = (stream.next_batch() for _ in range(n))
            total = torch.zeros(2, dtype=torch.float64, device=self.rt.device)  # [sum of losses, tokens]
            for x, y, *examples in progress(
                batches, total=n, desc=f"eval {split}", unit="batch", disable=not (show_progress and d.is_main)
            ):
                with self.rt.autocast():
                    _, loss = self.eval_model(x, y, examples=examples[0] if examples else None)
                count = (y != -1).sum()  # 0 in a filler batch (same_count), whose loss is not a number
                total += torch.stack([torch.where(count > 0, loss.double() * count, 0.0), count.double()])
            dist_utils.all_reduce_sum(total)
            losses[split] = (total[0] / total[1]).item()
        if self.sharded:  # the root's weights (embeddings, head) stay gathered after a forward pass, for the
            self.raw_model.reshard()  # type: ignore[operator]  # backward pass that starts with them: none follows here, so free them
        self.eval_model.train()
        return losses

    def evaluate_and_checkpoint(self) -> dict[str, float]:
        losses = self.evaluate()
        if not all(math.isfinite(v) for v in losses.values()):
            self._diverged(f"evaluation loss is {losses}")
        improved = losses["val"] < self.best_val_loss
        if improved:
            self.best_val_loss = losses["val"]
        benchmarks = self.score_eval_tasks()
        self.save_checkpoint(best=improved)  # first: "new best" is only said of a checkpoint that exists
        self.logger.record(
            "eval",
            self.step,
            **{f"{k}_loss": v for k, v in losses.items()},
            val_ppl=math.exp(losses["val"]),
            best_val_loss=self.best_val_loss,
            **benchmarks,
        )
        self.say(
            f"step {self.step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
            f"(perplexity {math.exp(losses['val']):.2f}){', new best' if improved else ''}"
        )
        if benchmarks:
            self.say("  " + ", ".join(f"{k} {v:.4g}" for k, v in benchmarks.items()))
        if self.dist.is_main:
            self.curves.maybe_draw(time.time(), self.say)  # out_dir/curves.png, when it is time (plot.py)
        return losses

    def score_eval_tasks(self) -> dict[str, float]:
        """The eval_tasks benchmarks on the live model (rank 0; {} elsewhere): {"hellaswag/acc_norm": ...}."""
        if not self.eval_tasks:
            return {}
        from nanogpt2.evaluate import Scorer

        # The plain module: a compiled one would recompile for each new window length.
        scorer = Scorer(self.raw_model, self.rt, self.cfg.batch_size)
        figures = {}
        for name, task in self.eval_tasks:
            for key, value in task.evaluate(scorer).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    figures[f"{name}/{key}"] = value
        return figures

    def evaluate_only(self) -> dict:
        """eval_only=True: report the loss and perplexity of init_from's model on the dataset."""
        losses = self.evaluate(show_progress=True)
        for split, loss in losses.items():
            self.say(f"{split}: loss {loss:.4f}, perplexity {math.exp(loss):.2f}")
        self.logger.record(
            "eval_only",
            self.step,
            **{f"{k}_loss": v for k, v in losses.items()},
            **{f"{k}_ppl": math.exp(v) for k, v in losses.items()},
        )
        return losses

    # -- checkpoints --------------------------------------------------------------

    def checkpoint_state(self, shards: str | None = None) -> dict:
        """Everything needed to continue exactly: weights, optimizer, scaler, step, best loss, config, every
        process's random generators and data position. A sharded run's weights and optimizer state are in
        the folder `shards` instead (shards.py)."""
        weights: dict[str, Any]
        if shards:
            weights = {"shards": shards}
        else:  # the plain module's weights (no compile/DDP key prefixes); a LoRA run's adapters only, plus its base
            model = adapter_state_dict(self.raw_model) if self.lora else self.raw_model.state_dict()
            weights = {"model": model, "optimizer": self.optimizer.state_dict()}
        return {
            "format_version": FORMAT_VERSION,
            **weights,
            **({"lora": self.lora} if self.lora else {}),
            "model_config": asdict(self.raw_model.config),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "config": config_dict(self.cfg),
            "world_size": self.dist.world_size,
            # Pair data's template, for sample.py to format prompts as the model learned them (data/pairs.py).
            "template": self.data.meta["loss_mask"]["template"] if self.data.window else None,
            "rng": dist_utils.gather_objects(rng_state(self.rt.device)),
            "loader": dist_utils.gather_objects(self.train_batches.state_dict()),
        }

    def save_checkpoint(self, best: bool) -> None:
        """Write out_dir/ckpt.pt atomically (and best.pt if this is the best so far). All ranks call it.
        A sharded run writes its folder of shards first, which the new ckpt.pt then names."""
        finite = all(bool(torch.isfinite(local(p)).all()) for p in self.raw_model.parameters())
        if dist_utils.any_process(not finite, self.rt.device):  # a shard: every process must agree
            self._diverged("the weights contain NaN or inf")
        shards = None
        if self.sharded:
            shards = save_shards(self.out_dir, self.raw_model, self.optimizer, self.step, self.dist)
        state = self.checkpoint_state(shards)  # collective: every rank contributes its random state
        if self.dist.is_main:
            write_checkpoint(self.out_dir, state, best)
            self.folder.checkpointed = True
            if shards:
                remove_unused_shards(self.out_dir)  # only now: ckpt.pt no longer names the previous folder
        dist_utils.barrier()

    # -- reporting ----------------------------------------------------------------

    def say(self, line: str) -> None:
        self.logger.print(line)  # rank 0 only; keeps a progress bar intact

    def _log_step(self, loss_sum: torch.Tensor, lr: float) -> None:
        loss = dist_utils.all_reduce_mean(loss_sum.detach().clone()).item()
        if not math.isfinite(loss):
            self._diverged(f"the training loss is {loss} at step {self.step}")
        now = time.time()
        steps = self.step - self._last_log[0]
        seconds = max(now - self._last_log[1], 1e-9)
        self._last_log = (self.step, now)
        tokens_per_sec = steps * self.cfg.tokens_per_step / seconds
        mfu = None
        if self.peak_flops:
            mfu = model_flops_utilization(self.flops_per_token, tokens_per_sec / self.dist.world_size, self.peak_flops)
        mem = torch.cuda.max_memory_allocated(self.rt.device) / 2**30 if self.rt.device_type == "cuda" else None
        eta = (self.cfg.max_iters - self.step) * seconds / steps
        self.logger.record(
            "train",
            self.step,
            loss=loss,
            lr=lr,
            tokens_per_sec=tokens_per_sec,
            mfu=mfu,
            peak_mem_gib=mem,
            step_seconds=seconds / steps,
        )
        mfu_text = f"MFU {mfu:.1%}" if mfu is not None else "MFU n/a"
        mem_text = f"mem {mem:.2f} GiB" if mem is not None else "mem n/a"
        summary = f"loss {loss:.4f} | lr {lr:.2e} | {tokens_per_sec:,.0f} tok/s | {mfu_text} | {mem_text}"
        self.logger.progress(
            self.step, summary, f"step {self.step}/{self.cfg.max_iters} | {summary} | ETA {format_duration(eta)}"
        )

    def _diverged(self, what: str) -> None:
        kept = self.out_dir / LATEST
        where = f"the last good checkpoint is kept at {kept}" if kept.exists() else "no checkpoint was written"
        raise TrainingDiverged(
            f"{what}: training diverged; {where}. Try a lower learning_rate, a longer warmup_iters, or dtype=bfloat16"
        )

    def close(self, failed: bool = False) -> None:
        """End the run: the logger, the lock, and after a failed start the files it made (run_dir.py)."""
        self.logger.close()
        self.lock.release()
        if failed and self.dist.is_main and not self.cfg.eval_only:
            self.folder.clean_failed_start()
        dist_utils.shutdown()
