"""Ray Data engine of the preparation scripts (``--engine ray``): the same rows, computed on a Ray cluster.

The input rows are cut into ``--num-shards`` contiguous shards, as with the ``datasets`` engine. All
unfinished shards go through one streaming Ray Data pipeline:

1. every row is one CPU task (``decompose_video`` and friends: the scripts' own row function), so the
   rows spread over every node's cores;
2. with ``--motion-tokenizer``, the rows then pass through a pool of actors that each hold the motion
   tokenizer once (``--token-actors`` of them, ``--token-batch-size`` rows per batch, on a GPU when
   ``--device cuda``);
3. the driver collects each shard's rows and writes them as one Parquet file,
   ``<out>/shard-00000-of-00004.parquet``, with the ``datasets`` features in its schema, so
   ``datasets.load_dataset("parquet", data_dir=out)`` and the training scripts read the folder as it is
   (images as images, motion as arrays). A shard appears only once complete (written to a temporary
   name, then renamed); a rerun skips the shards that exist.

Rows travel between the stages as pickled bytes: the rows' columns change type from row to row (no
clips vs. some, ``None`` vs. an error message), which Ray Data would otherwise infer block by block.
Ray is an optional dependency (``pip install -e ".[distributed]"``); the ``datasets`` engine needs none.
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset, Features

PARQUET_PATTERN = "shard-{index:05d}-of-{count:05d}.parquet"
# Memory each decomposition task reserves: decompose_video stays below 1 GB on any length (measured
# with benchmarks/bench_decompose.py). Reserving it also keeps the decomposition stage out of the
# tokenizer actors: Ray Data fuses consecutive stages only when they ask for the same resources, and a
# fused stage would decompose every video inside the few tokenizer actors.
DECOMPOSITION_MEMORY_BYTES = 1 << 30
# Input blocks per cluster CPU: enough to keep every core busy while the slow videos finish, few
# enough for Ray's scheduler on millions of rows.
_BLOCKS_PER_CPU = 16
# Internal columns of the pipeline: the pickled row and where it goes.
_PAYLOAD, _SHARD, _POSITION = "payload", "shard", "position"


class RayEngineError(RuntimeError):
    """Ray is missing, or the Ray cluster cannot be reached."""


def import_ray():
    """Import Ray, or say how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data ships in the ``ray[data]`` extra
    except ImportError as error:
        raise RayEngineError(
            f"--engine ray needs Ray Data ({error}); install it with: pip install -e \".[distributed]\""
        ) from error
    return ray


def connect(address: str | None, num_cpus: int | None = None):
    """Connect to the Ray cluster at ``address`` (``auto``: the one ``ray start`` runs here), or start a
    local one when ``address`` is ``None``. Returns the ``ray`` module."""
    ray = import_ray()
    ship_scripts_by_value(ray)
    if not ray.is_initialized():
        try:
            if address is None:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except ConnectionError as error:
            raise RayEngineError(
                f"no Ray cluster at {address!r} ({error}); start one with `ray start --head` "
                "or leave out --ray-address to run a local one"
            ) from error
    return ray


def ship_scripts_by_value(ray) -> None:
    """Pickle the functions of this folder's scripts by value, so that no Ray worker needs to import them.

    The folder is no package (it would shadow the ``datasets`` library) and other nodes may not have it
    at the same path; ``transformers_vlavit`` itself must be installed on every node.
    """
    folder = Path(__file__).resolve().parent
    for module in list(sys.modules.values()):
        location = getattr(module, "__file__", None)
        if location and Path(location).resolve().parent == folder and module.__name__ != "__main__":
            ray.cloudpickle.register_pickle_by_value(module)


class RowTask:
    """Ray Data ``map`` function: run the script's row function and pickle the output row.

    The output row is the input row updated with what the row function returns, as ``Dataset.map``
    builds it, then encoded by ``features`` here, on the worker (images to PNG/JPEG bytes). Encoding keeps
    only the columns of ``features``, which is how input-only columns are left out.
    """

    def __init__(self, process_row: Callable[[dict], dict], features: Features):
        self.process_row, self.features = process_row, features

    def __call__(self, item: dict) -> dict:
        row = pickle.loads(item[_PAYLOAD])
        output = {**row, **self.process_row(row)}
        return {
            _PAYLOAD: pickle.dumps(self.features.encode_example(output)),
            _SHARD: item[_SHARD],
            _POSITION: item[_POSITION],
        }


class MotionTokenActor:
    """Ray Data actor: holds one motion tokenizer and adds ``motion_token_ids`` to batches of rows."""

    def __init__(self, load_tokenizer: Callable, encode_clips: Callable, batch_size: int):
        # The script's functions come along (pickled by value): workers need not import the script.
        self.tokenizer = load_tokenizer()
        self.encode = encode_clips
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        rows = [pickle.loads(payload) for payload in batch[_PAYLOAD]]
        motions = [np.asarray(row["motion_vectors"], dtype=np.float32) for row in rows]
        for row, ids in zip(rows, self.encode(self.tokenizer, motions, self.batch_size)):
            row["motion_token_ids"] = ids
        return {**batch, _PAYLOAD: np.array([pickle.dumps(row) for row in rows], dtype=object)}


def pending_shards(rows: Dataset, out_dir: Path, num_shards: int) -> tuple[int, list[int]]:
    """``(shard count, indices of the shards not yet written)``; says which ones are skipped."""
    num_shards = max(1, min(num_shards, len(rows)))
    pending = []
    for index in range(num_shards):
        if (out_dir / PARQUET_PATTERN.format(index=index, count=num_shards)).is_file():
            print(f"[{PARQUET_PATTERN.format(index=index, count=num_shards)}] already done, skipped", flush=True)
        else:
            pending.append(index)
    return num_shards, pending


def run_ray_pipeline(
    rows: Dataset,
    process_row: Callable[[dict], dict],
    features: Features,
    out_dir: Path,
    *,
    num_shards: int,
    ray_address: str | None,
    load_tokenizer: Callable | None = None,
    encode_clips: Callable | None = None,
    device: str = "cpu",
    token_batch_size: int = 16,
    token_actors: int = 1,
    local_cpus: int | None = None,
    unit: str = "videos",
) -> Dataset:
    """Compute every unfinished shard on Ray and write it as Parquet under ``out_dir``; returns all rows.

    Args:
        rows: the resolved input rows (the scripts' ``datasets`` rows).
        process_row: the scripts' row function (input row -> new columns); it never raises.
        features: features of the output rows, which are their columns (``motion_token_ids`` included
            when a tokenizer is given).
        out_dir: output folder of the Parquet shards.
        num_shards: shards (resume unit; one Parquet file each).
        ray_address: address of a running cluster (``auto``, ``ray://host:10001``...), ``None`` for a local one.
        load_tokenizer: ``() -> motion tokenizer``, run once in each tokenizer actor; ``None``: no
            ``motion_token_ids`` column.
        encode_clips: ``(tokenizer, motions, batch_size) -> ids`` of the script (``motions``: one
            ``[clips, 2, T, H, W]`` float32 array per row; ``ids``: one ``[clips, num_tokens]`` per row).
        device: device of the tokenizer actors (``cuda`` reserves one GPU per actor).
        token_batch_size: rows per tokenizer batch (and clips per forward).
        token_actors: tokenizer actors.
        local_cpus: CPUs of the local instance started when ``ray_address`` is ``None`` (all when ``None``).
        unit: what a row is, for the throughput line.

    Returns:
        The whole output as one ``Dataset`` read from the Parquet shards.
    """
    num_shards, pending = pending_shards(rows, out_dir, num_shards)
    out_dir.mkdir(parents=True, exist_ok=True)
    if pending:
        ray = connect(ray_address, local_cpus)
        started = time.perf_counter()
        items, sizes = [], {}
        for index in pending:
            shard = rows.shard(num_shards, index, contiguous=True)
            sizes[index] = len(shard)
            items += [
                {_PAYLOAD: pickle.dumps(row), _SHARD: index, _POSITION: position}
                for position, row in enumerate(shard)
            ]
        # Small blocks (one row each on small inputs), so that the videos spread over the cluster.
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        blocks = max(1, min(len(items), cpus * _BLOCKS_PER_CPU))
        row_features = features if load_tokenizer is None else _without_tokens(features)
        pipeline = ray.data.from_items(items, override_num_blocks=blocks).map(
            RowTask(process_row, row_features), num_cpus=1, memory=DECOMPOSITION_MEMORY_BYTES
        )
        if load_tokenizer is not None:
            pipeline = pipeline.map_batches(
                MotionTokenActor,
                fn_constructor_kwargs={
                    "load_tokenizer": load_tokenizer,
                    "encode_clips": encode_clips,
                    "batch_size": token_batch_size,
                },
                batch_size=token_batch_size,
                batch_format="numpy",
                concurrency=token_actors,
                num_gpus=1 if device.startswith("cuda") else 0,
            )
        buffers: dict[int, dict[int, dict]] = {index: {} for index in pending}
        for item in pipeline.iter_rows():
            shard_rows = buffers[item[_SHARD]]
            shard_rows[item[_POSITION]] = pickle.loads(item[_PAYLOAD])
            if len(shard_rows) == sizes[item[_SHARD]]:
                write_shard(buffers.pop(item[_SHARD]), features, out_dir, item[_SHARD], num_shards)
        total = time.perf_counter() - started
        print(f"processed {len(items)} rows in {total:.1f} s: {len(items) / max(total, 1e-9):.2f} {unit}/s", flush=True)
    return load_parquet_shards(out_dir, num_shards)


def _without_tokens(features: Features) -> Features:
    """The features before the tokenizer actors add ``motion_token_ids``."""
    return Features({name: feature for name, feature in features.items() if name != "motion_token_ids"})


def write_shard(rows: dict[int, dict], features: Features, out_dir: Path, index: int, num_shards: int) -> None:
    """Write one finished shard (rows by position) as Parquet; visible only once complete."""
    name = PARQUET_PATTERN.format(index=index, count=num_shards)
    shard = Dataset.from_list([rows[position] for position in sorted(rows)], features=features)
    temporary = out_dir / f"{name}.tmp"
    shard.to_parquet(str(temporary))
    temporary.rename(out_dir / name)
    failures = sum(error is not None for error in shard["error"])
    print(f"[{name}] {len(shard)} rows ({failures} failed)", flush=True)


def load_parquet_shards(out_dir: Path, num_shards: int) -> Dataset:
    """All shards of ``out_dir`` as one dataset, in input order (``load_dataset("parquet")``)."""
    from datasets import load_dataset

    files = [str(out_dir / PARQUET_PATTERN.format(index=index, count=num_shards)) for index in range(num_shards)]
    return load_dataset("parquet", data_files=files, split="train")
