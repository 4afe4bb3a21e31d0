"""Read back what the data-preparation scripts (``datasets/prepare_*.py``) write, whichever engine wrote it."""

from __future__ import annotations

import os
from pathlib import Path

# Written by ``Dataset.save_to_disk`` (the ``datasets`` engine).
_SAVED_DATASET_FILE = "state.json"


def load_prepared_dataset(path: str | os.PathLike):
    """The rows of a prepared folder as one ``datasets.Dataset``.

    Args:
        path: a ``save_to_disk`` folder (``--engine datasets``) or a folder of Parquet shards
            (``--engine ray``: ``shard-00000-of-00004.parquet``...), read in shard order.

    Returns:
        ``datasets.Dataset`` with the features the script wrote (images as ``Image``, motion as arrays).
    """
    from datasets import load_dataset, load_from_disk

    folder = Path(path)
    shards = sorted(folder.glob("*.parquet"))
    if shards and not (folder / _SAVED_DATASET_FILE).is_file():
        return load_dataset("parquet", data_files=[str(shard) for shard in shards], split="train")
    return load_from_disk(str(folder))
