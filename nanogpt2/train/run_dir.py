"""A run's out_dir: never another run's files overwritten by accident, one writer at a time, nothing left behind.

    out_dir/ckpt.pt, best.pt     checkpoints (checkpoint.py); a sharded run's shards-*/ folders (shards.py)
    out_dir/config.json          the resolved settings
    out_dir/metrics.jsonl        every logged figure (metrics.py)
    out_dir/.lock                held while a run writes here: its process id, and an OS lock on the file

Three rules, each one clear error instead of a silent surprise:

* A new run (not init_from=resume) into a folder that holds a run is refused unless --overwrite=True,
  which removes that run's files first. Otherwise ckpt.pt and best.pt would be replaced, and two runs'
  steps interleaved in metrics.jsonl.
* Two runs writing into one out_dir at once: the second is refused while the first holds the lock. The
  lock is an advisory OS lock (fcntl.flock) on out_dir/.lock, which the kernel releases when the holder
  dies, however it dies; the pid in the file lets a later run say whose lock it took over.
* A run that fails before its first checkpoint removes the files it made (config.json, metrics.jsonl,
  the lock), and the folder too if it made it, so that a failed start leaves no half-run behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nanogpt2.common.files import process_alive
from nanogpt2.errors import UserError
from nanogpt2.train.checkpoint import BEST, LATEST, PARTIAL_PREFIX, SHARDS_PREFIX

LOCK = ".lock"
RUN_FILES = (LATEST, BEST, "metrics.jsonl", "config.json", "curves.png")  # what a run writes; --overwrite removes it
MARKS_A_RUN = (LATEST, BEST, "metrics.jsonl")  # config.json alone is what a failed start used to leave


def run_files(out_dir: Path) -> list[str]:
    """The names of the files in out_dir that show a run was trained there."""
    return [name for name in MARKS_A_RUN if (out_dir / name).is_file()]


def check_new_run(out_dir: Path, overwrite: bool) -> None:
    """Refuse a fresh run into a folder holding another run's files, unless overwrite."""
    found = run_files(out_dir)
    if found and not overwrite:
        raise UserError(
            f"out_dir {out_dir} already holds a run ({', '.join(found)}): continue it with --init_from=resume, "
            f"choose another out_dir, or pass --overwrite=True to replace it"
        )


def remove_run_files(out_dir: Path) -> list[str]:
    """Delete an earlier run's files and shards folders (for --overwrite=True); returns their names."""
    removed = []
    for name in RUN_FILES:
        if (out_dir / name).is_file():
            (out_dir / name).unlink()
            removed.append(name)
    for folder in sorted(out_dir.iterdir()):
        if folder.is_dir() and folder.name.startswith((SHARDS_PREFIX, PARTIAL_PREFIX)):
            shutil.rmtree(folder)
            removed.append(folder.name + "/")
    return removed


def check_not_locked(out_dir: Path) -> None:
    """Refuse at once, before any set-up work, an out_dir another live run holds (RunLock)."""
    path = out_dir / LOCK
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        holder = _read_pid(fd)
        if not _lock(fd, holder):
            raise _held(holder, out_dir)
    finally:
        os.close(fd)  # and with it the probe's own lock


def _held(holder: int | None, out_dir: Path) -> UserError:
    return UserError(
        f"another run (process {holder or 'unknown'}) is writing to {out_dir} now: "
        f"wait for it to finish, or choose another out_dir"
    )


class RunLock:
    """out_dir/.lock, held from acquire() until release() or the process's end."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock, or raise a UserError naming the run that holds it. Returns a note when the lock
        file of a process that is gone was taken over."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            previous = _read_pid(fd)
            if not _lock(fd, previous):
                raise _held(previous, self.path.parent)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if previous and previous != os.getpid():
            return f"note: took over {self.path} from process {previous}, which is no longer running"
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # before unlocking, so that no one locks a file being removed
        os.close(self._fd)  # closing releases the OS lock
        self._fd = None


def _lock(fd: int, previous: int | None) -> bool:
    """An exclusive lock on fd without waiting: False if another process holds one."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the pid in the lock file, if that process still runs
        return previous is None or previous == os.getpid() or not process_alive(previous)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


class RunFolder:
    """What a run did to its out_dir, to undo when it fails before its first checkpoint."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.created = not out_dir.exists()
        self.before = set(os.listdir(out_dir)) if out_dir.is_dir() else set()
        self.checkpointed = False  # set once a checkpoint is written: from then on the run's files stay

    def clean_failed_start(self) -> None:
        """Remove what this run made, if it made no checkpoint: its new files, and the folder if it made it."""
        if self.checkpointed or not self.out_dir.is_dir():
            return
        for name in (*RUN_FILES, LOCK):
            if name not in self.before:
                (self.out_dir / name).unlink(missing_ok=True)
        if self.created and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()
