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
* llmc.py     - llm.c's token shards: a folder of them opens as a dataset; prepare can write them
* cli.py      - `data/prepare.py` and the ready recipes under data/

The names below are imported on first use (PEP 562 module __getattr__): the batch
loader needs PyTorch, and `python data/prepare.py` starts without paying for it.
"""

from nanogpt2.common.lazy import lazy_attributes

_HOMES = {
    "Dataset": "nanogpt2.data.format",
    "DatasetError": "nanogpt2.data.format",
    "TokenFile": "nanogpt2.data.format",
    "open_dataset": "nanogpt2.data.format",
    "RandomBatches": "nanogpt2.data.loader",
    "sequential_batches": "nanogpt2.data.loader",
    "count_sequential_batches": "nanogpt2.data.loader",
    "PrepareConfig": "nanogpt2.data.pipeline",
    "prepare": "nanogpt2.data.pipeline",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_attributes(__name__, _HOMES)
