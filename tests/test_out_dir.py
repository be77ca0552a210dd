"""train.py's out_dir behaves like an input: one `error:` line and exit 2, nothing half-written, old files intact.

Read-only and full file systems are real ones: small tmpfs mounts, which need root (as CI has); elsewhere
those tests are skipped with the reason.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest

from nanogpt2.errors import run_main
from nanogpt2.train.checkpoint import read_checkpoint

import train as train_script
from conftest import TINY_RUN as TINY


def fails_with_one_line(argv, capsys) -> tuple[str, str]:
    """Run train.py's main; it must exit 2 with one `error:` line. Returns (that line, stdout)."""
    with pytest.raises(SystemExit) as info:
        run_main(train_script.main, argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0], captured.out


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(size, read_only=False) -> a fresh tmpfs folder of that size, unmounted afterwards."""
    mounted = []

    def mount(size: str, read_only: bool = False):
        point = tmp_path / f"fs-{uuid.uuid4().hex[:8]}"
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True, timeout=30
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_out_dir_that_is_or_crosses_a_file(where, shakespeare_data, tmp_path, capsys):
    """An out_dir that is a regular file, or lies under one, is refused before any work, and the file is
    left as it was."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    out = blocker if where == "file" else blocker / "run"
    line, _ = fails_with_one_line([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={out}"], capsys)
    assert "is a file" in line and "choose another out_dir" in line
    assert blocker.read_text() == "keep me"


def test_out_dir_on_a_read_only_file_system(shakespeare_data, mount_tmpfs, capsys):
    """An out_dir that cannot be written (here a read-only file system, which even root cannot write) is
    refused before any work."""
    ro = mount_tmpfs("1m", read_only=True)
    line, _ = fails_with_one_line([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={ro / 'run'}"], capsys)
    assert "cannot be written" in line


def test_disk_full_during_a_checkpoint(shakespeare_data, mount_tmpfs, capsys):
    """When the disk fills while a checkpoint is written: one error line naming the cause, exit 2, no
    temporary file left, the previous checkpoint still loadable, and no "new best" for the step that failed."""
    disk = mount_tmpfs("12m")  # room for one checkpoint of this model (~10 MB), not for a second beside it
    out = disk / "run"
    line, printed = fails_with_one_line(
        [*TINY, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=4", "--eval_interval=2"], capsys
    )
    assert "could not write a checkpoint" in line and "at step 2" in line
    assert "the previous checkpoint is intact" in line
    assert "step 0: train loss" in printed and "step 2: train loss" not in printed
    assert read_checkpoint(out / "ckpt.pt")["step"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "ckpt.pt", "config.json", "metrics.jsonl"]


def prepare_main(argv):
    from data.prepare import main

    return main(argv)


def export_main(argv):
    from nanogpt2.hf.export import main

    return main(argv)


@pytest.fixture
def small_run(shakespeare_data, tmp_path_factory):
    """A tiny trained run to export."""
    from nanogpt2.train.trainer import train

    out = tmp_path_factory.mktemp("small_run") / "run"
    train([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=1", "--eval_interval=1"])
    return out


@pytest.mark.parametrize("tool", ["prepare", "export"])
def test_other_output_paths_under_a_file(tool, small_run, tmp_path, capsys):
    """data/prepare.py's --out and the export folder, placed under a regular file, are one error line, exit 2."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    text = tmp_path / "in.txt"
    text.write_text("To be, or not to be, that is the question. " * 200)
    argv = (
        [f"--input={text}", f"--out={blocker / 'data'}"] if tool == "prepare" else [str(small_run), str(blocker / "hf")]
    )
    with pytest.raises(SystemExit) as info:
        run_main(prepare_main if tool == "prepare" else export_main, argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Not a directory" in lines[0], lines
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize("tool", ["prepare", "export"])
def test_disk_full_while_writing_data_or_an_export(tool, small_run, mount_tmpfs, tmp_path, capsys):
    """A disk that fills while data is prepared or a model exported: one error line, exit 2, and no
    temporary or half-written file left behind."""
    disk = mount_tmpfs("64k")
    text = tmp_path / "in.txt"
    text.write_text("To be, or not to be, that is the question. " * 4000)  # ~170 KB of text: ~80 KB of tokens
    argv = (
        [f"--input={text}", f"--out={disk / 'data'}", "--block_size=16"]
        if tool == "prepare"
        else [str(small_run), str(disk / "hf")]
    )
    with pytest.raises(SystemExit) as info:
        run_main(prepare_main if tool == "prepare" else export_main, argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    leftovers = [p for p in disk.rglob("*") if p.is_file()]
    assert not [p for p in leftovers if "tmp" in p.name or "partial" in p.name], leftovers
