"""Token data: prepare any text into uint16 token files, and feed training from them.

    python data/prepare.py --input notes.txt my_folder/ data.csv --out data/mine

writes data/mine/{train.bin, val.bin, meta.json}; training reads them with

    ds = open_dataset("data/mine")
    batches = RandomBatches(ds.split("train"), batch_size, block_size, seed=1337)
    x, y = batches.next_batch()

The modules, one concern each:

* format.py   - the on-disk format, meta.json, open_dataset (refuses truncated files)
* sources.py  - reading .txt/.md, folders, .csv, .jsonl/.json/.parquet, Hugging Face datasets
* tokenize.py - tokenizing big text in pieces on several threads, with unchanged ids
* pipeline.py - the pipeline: split by document, tokenize, write, rename into place
* loader.py   - random training batches (resumable) and exact sequential evaluation
* cli.py      - `data/prepare.py` and the ready recipes under data/
"""

from nanogpt2.data.format import Dataset, DatasetError, open_dataset
from nanogpt2.data.loader import RandomBatches, count_sequential_batches, sequential_batches
from nanogpt2.data.pipeline import PrepareConfig, prepare

__all__ = [
    "Dataset", "DatasetError", "open_dataset",
    "RandomBatches", "sequential_batches", "count_sequential_batches",
    "PrepareConfig", "prepare",
]
