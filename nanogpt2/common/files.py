"""Writing files all or nothing: a reader sees the old file or the whole new one, never half of one.

Every file this library writes for later use (checkpoints, token files, meta.json,
a training run's config.json, a downloaded corpus) goes through `atomic_write`:

1. the bytes go to a temporary file next to the target, `.NAME.tmp-PID`;
2. the file is flushed and fsync'ed, so its bytes are on the disk;
3. `os.replace` renames it over the target, an atomic operation on POSIX and Windows;
4. the folder is fsync'ed, so that the rename itself survives a power cut.

If anything fails before the rename (an exception, Ctrl-C, a full disk) the temporary
file is deleted and the target keeps its old content; if the process is killed, the
leftover is a hidden `.tmp-` file that nothing reads. No PyTorch here: data
preparation uses this module too, and starts without importing torch.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def temporary_name(path: str | os.PathLike) -> Path:
    """Where the new content of `path` is written before it replaces it: a hidden file beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_options) -> Iterator[IO[Any]]:
    """Open a temporary file for writing the new content of `path`; when the block ends without an
    exception, make it `path` (steps above). `mode` is "wb", "w" or "w+b"; `open_options` go to open().

        with atomic_write("ckpt.pt") as f:
            torch.save(state, f)
    """
    path = Path(path)
    tmp = temporary_name(path)
    remove_stale_temporaries(path)
    try:
        with open(tmp, mode, **open_options) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the `.NAME.tmp-PID` files of `path` whose writer process is gone (killed mid-write: a
    checkpoint's can be gigabytes). A live writer's file, this process's included, is left alone.
    Returns what was removed."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def process_alive(pid: int) -> bool:
    """Is there a process with this id? (Signal 0 checks without sending anything.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def give_default_mode(path: str | os.PathLike) -> None:
    """Set path's permissions to what open() would have given it under this process's umask (rw for the
    user, r for others under the usual 022): for files a library wrote with 0600, as safetensors does."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path`, all or nothing."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable (on POSIX a folder's entries live in the folder's own data)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def why_failed(error: Exception) -> str:
    """An OS or torch.save error in a few words: 'No space left on device', 'Permission denied', ..."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return "the disk is full or the write failed" if "unexpected pos" in text else text
