"""Token data: prepare any text into uint16 token files, and feed training from them.

    python data/prepare.py --input notes.txt my_folder/ data.csv --out data/mine

writes data/mine/{train.bin, val.bin, meta.json}; training reads them with

    ds = open_dataset("data/mine")
    batches = RandomBatches(ds.split("train"), batch_size, block_size, seed=1337)
    x, y = batches.next_batch()

The modules, one concern each:

* format.py   - the on-disk format, meta.json, TokenFile, open_dataset (refuses truncated files)
* sources.py  - reading .txt/.md, folders, .csv, .jsonl/.json/.parquet, Hugging Face datasets
* tokenize.py - tokenizing big text in pieces on several threads, with unchanged ids
* pipeline.py - the pipeline: split by document, tokenize, write, rename into place
* loader.py   - random training batches (resumable) and exact sequential evaluation
* cli.py      - `data/prepare.py` and the ready recipes under data/

The names below are imported on first use (PEP 562 module __getattr__): the batch
loader needs PyTorch, and `python data/prepare.py` starts without paying for it.
"""

from importlib import import_module

_HOMES = {
    "Dataset": "format",
    "DatasetError": "format",
    "TokenFile": "format",
    "open_dataset": "format",
    "RandomBatches": "loader",
    "sequential_batches": "loader",
    "count_sequential_batches": "loader",
    "PrepareConfig": "pipeline",
    "prepare": "pipeline",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(f"nanogpt2.data.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'nanogpt2.data' has no attribute {name!r}")
