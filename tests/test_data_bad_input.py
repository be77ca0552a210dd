"""Bad inputs to data preparation: a one-line `error: ...`, exit status 2, and nothing left that looks valid."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nanogpt2.data import DatasetError, open_dataset
from nanogpt2.data.cli import main as prepare_cli
from nanogpt2.errors import run_main

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256))


def make_input(case: str, d: Path) -> str:
    """Create the bad input `case` under d and return the --input argument."""
    if case == "missing":
        return str(d / "no_such_file.txt")
    if case == "empty file":
        (d / "empty.txt").write_text("")
        return str(d / "empty.txt")
    if case == "whitespace only":
        (d / "blank.txt").write_text("  \n\t\r\n   \n")
        return str(d / "blank.txt")
    if case == "binary":
        (d / "image.txt").write_bytes(PNG)
        return str(d / "image.txt")
    if case == "folder without text":
        (d / "folder").mkdir()
        (d / "folder" / "picture.png").write_bytes(PNG)
        return str(d / "folder")
    if case == "unsupported type":
        (d / "report.pdf").write_bytes(b"%PDF-1.4")
        return str(d / "report.pdf")
    if case == "csv without column":
        (d / "t.csv").write_text("title,body\nhello,world\n")
        return str(d / "t.csv")
    if case == "jsonl without column":
        (d / "t.jsonl").write_text('{"content": "hello"}\n')
        return str(d / "t.jsonl")
    if case == "smaller than a block":
        (d / "short.txt").write_text("To be, or not to be, that is the question.")
        return str(d / "short.txt")
    raise AssertionError(case)


CASES = {
    "missing": "does not exist",
    "empty file": "has no text",
    "whitespace only": "has no text",
    "binary": "binary",
    "folder without text": "no .txt or .md files",
    "unsupported type": "unsupported file type '.pdf'",
    "csv without column": "no column 'text' (its columns: 'title', 'body')",
    "jsonl without column": "no column 'text'",
    "smaller than a block": "fewer than the 1,025 that one window of block_size=1024 needs",
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_error_and_leaves_nothing(case, tmp_path, capsys):
    """Each bad input exits with status 2, one `error:` line naming the problem, and no token files."""
    arg = make_input(case, tmp_path)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run_main(prepare_cli, ["--input", arg, "--out", str(out)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    last = lines[-1]
    assert last.startswith("error: ")
    if case != "smaller than a block":  # refused before tokenizing starts: nothing but the error
        assert len(lines) == 1
    assert CASES[case] in last
    assert not out.exists()


def test_failed_preparation_keeps_the_previous_dataset(tmp_path, capsys):
    """A preparation that fails half-way leaves an existing dataset in the folder whole and loadable."""
    good = tmp_path / "good.txt"
    good.write_text("Now is the winter of our discontent. " * 40)
    out = tmp_path / "out"
    prepare_cli(["--input", str(good), "--out", str(out), "--block_size", "16", "--quiet"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # the second input is binary: the run fails after the first file has been tokenized
    with pytest.raises(SystemExit):
        run_main(
            prepare_cli, ["--input", str(good), make_input("binary", tmp_path), "--out", str(out), "--block_size", "16"]
        )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(open_dataset(out).split("train")) > 16


def test_bad_option_values_are_refused(tmp_path, capsys):
    """A validation fraction outside (0, 1) is a one-line error before anything is read."""
    (tmp_path / "a.txt").write_text("text " * 100)
    with pytest.raises(SystemExit) as exit_info:
        run_main(
            prepare_cli, ["--input", str(tmp_path / "a.txt"), "--out", str(tmp_path / "o"), "--val_fraction", "1.5"]
        )
    assert exit_info.value.code == 2
    assert "val_fraction=1.5: must be between 0 and 1" in capsys.readouterr().err


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: connections are refused


def test_shakespeare_recipe_offline_says_which_input_to_give(tmp_path):
    """Offline (every proxy pointing at a closed port), the recipe fails with one line naming --input."""
    proxy = f"http://127.0.0.1:{closed_port()}"
    env = {k: v for k, v in __import__("os").environ.items() if "proxy" not in k.lower()}
    env.update(https_proxy=proxy, HTTPS_PROXY=proxy, http_proxy=proxy, HTTP_PROXY=proxy, XDG_CACHE_HOME=str(tmp_path))
    result = subprocess.run(
        [sys.executable, str(REPO / "data" / "shakespeare" / "prepare.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot download")
    assert "--input PATH" in lines[0]
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no partial download left behind


def test_cut_short_download_is_not_cached(tmp_path):
    """A server that announces 100,000 bytes and hangs up after 1,500 gives a one-line error, and neither
    the partial file nor a cached copy is left to be reused by the next run."""
    import http.server
    import threading

    from nanogpt2.data.cli import download

    class CutShort(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1500)
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/input.txt"
        with pytest.raises(DatasetError, match="cut short|IncompleteRead"):
            download(url, tmp_path / "cache" / "input.txt", offline_hint="pass --input PATH")
    finally:
        server.shutdown()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
