"""Turn (video, caption) pairs into a `datasets` Arrow dataset with Video-LaVIT's decomposition precomputed.

Inputs
    * a CSV or JSONL file with one row per video: a path column (``video``, ``video_path``, ``path`` or
      ``--video-column``; relative paths are resolved against ``--video-root``, default: the input
      file's folder) and a caption column (``caption``, ``text`` or ``--caption-column``);
    * the WebVid layout (``--layout webvid``): the WebVid CSV (``videoid``, ``contentUrl``, ``page_dir``,
      ``name``) with the videos downloaded to ``<video-root>/<page_dir>/<videoid>.<ext>`` (extension of
      ``contentUrl``, mp4 when it has none).

Output (``--out DIR``, read it back with ``datasets.load_from_disk(DIR)``), one row per input row:
    video            string   absolute path of the source file (videos stay paths: no ``Video`` feature)
    caption          string
    keyframes        list[Image]  one RGB keyframe per clip, at the source resolution
    motion_vectors   Array5D [clips, 2, 24, 20, 36]  LLM-path scaling (divided by the motion std and by 10),
                     float16 by default (``--motion-dtype float32`` keeps full precision; float16 keeps
                     about 3 significant digits, ample for values of this range)
    keyframe_indices list[int32]  index of each clip's first frame in the re-encoded 6 fps stream
    frame_types      string   one letter per re-encoded frame ("IPPP...")
    fps, frame_height, frame_width, num_clips
    motion_token_ids Array2D [clips, num_tokens] int16 (int32 for codebooks over 32768 codes), 0-based codes,
                     only with ``--motion-tokenizer DIR`` (a saved VideoLaVITMotionTokenizer)
    error            string   None when the row succeeded; otherwise the error, and the row has no clips
    + every other column of the input (e.g. WebVid's ``videoid`` and ``duration``)

Engines (``--engine``):
    datasets (default): the input rows are cut into ``--num-shards`` contiguous shards processed one after the
        other, each with ``Dataset.map(num_proc=N)``; a finished shard is saved under ``DIR/shards`` and skipped
        when the command is run again (an interrupted shard also reuses the map cache files its finished workers
        wrote), so an interrupted run resumes where it stopped. The result is one ``load_from_disk`` folder.
    ray: the same rows on a Ray cluster (``--ray-address``, see ``ray_engine.py``): one CPU task per video,
        motion token ids in ``--token-actors`` actors, one Parquet file per finished shard in ``DIR``
        (``datasets.load_dataset("parquet", data_dir=DIR)``; the training scripts read the folder as it is);
        a rerun skips the shards already written. Needs ``pip install -e ".[distributed]"``.
    Without Ray, machines can still share the work by hand: give each machine its own slice of the input file
    (and its own ``--out``) and join the results with ``datasets.concatenate_datasets``.

Example::

    python datasets/prepare_video_text.py --input videos.csv --out data/video_text --num-proc 8
    python datasets/prepare_video_text.py --input videos.csv --out data/video_text --engine ray --ray-address auto
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import multiprocess
import numpy as np
import torch
from datasets import (
    Array2D,
    Array5D,
    Dataset,
    Features,
    Image,
    List,
    Value,
    concatenate_datasets,
    load_from_disk,
)

from transformers_vlavit.video_decomposition import (
    DEFAULT_CLIP_FRAMES,
    DEFAULT_FPS,
    DEFAULT_MAX_CLIPS,
    MOTION_GRID_SIZE,
    decompose_video,
)

PATH_COLUMNS = ("video", "video_path", "path", "file")
CAPTION_COLUMNS = ("caption", "text", "name")
# WebVid's identifier columns (read as text) and its caption; contentUrl only gives the file extension
WEBVID_COLUMNS = ("videoid", "page_dir", "contentUrl", "name")
SHARDS_FOLDER = "shards"
PLAN_FILE = "plan.json"
# written by ``Dataset.save_to_disk``: its presence in ``--out`` marks a finished preparation
DATASET_STATE_FILE = "state.json"
# --engine: Dataset.map on this machine, or Ray Data on a cluster (ray_engine.py)
ENGINES = ("datasets", "ray")


class PreparationError(RuntimeError):
    """The input file, its columns or the output folder do not allow the preparation to run."""


@dataclass(frozen=True)
class DecompositionOptions:
    """How every video is decomposed and stored (recorded in the plan so that a resume cannot mix settings)."""

    fps: int = DEFAULT_FPS
    clip_frames: int = DEFAULT_CLIP_FRAMES
    max_clips: int = DEFAULT_MAX_CLIPS
    transcode: bool = True
    motion_dtype: str = "float16"
    keyframe_format: str = "png"


def clip_features(options: DecompositionOptions) -> dict:
    """The `datasets` features of the decomposition columns that :func:`decompose_row` returns."""
    grid = (2, options.clip_frames, *MOTION_GRID_SIZE)
    return {
        "keyframes": List(Image()),
        "motion_vectors": Array5D(shape=(None, *grid), dtype=options.motion_dtype),
        "keyframe_indices": List(Value("int32")),
        "frame_types": Value("string"),
        "fps": Value("float32"),
        "frame_height": Value("int32"),
        "frame_width": Value("int32"),
        "num_clips": Value("int32"),
        "error": Value("string"),
    }


def encode_keyframe(image, keyframe_format: str):
    """Encode one PIL keyframe for the ``Image`` feature: lossless PNG, or JPEG (quality 95) to save space."""
    if keyframe_format == "png":
        return image
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return {"bytes": buffer.getvalue(), "path": None}


def failed_row(options: DecompositionOptions, message: str) -> dict:
    """The decomposition columns of a row whose video could not be decomposed: no clips, the error kept."""
    return {
        "keyframes": [],
        "motion_vectors": np.zeros((0, 2, options.clip_frames, *MOTION_GRID_SIZE), dtype=options.motion_dtype),
        "keyframe_indices": [],
        "frame_types": "",
        "fps": 0.0,
        "frame_height": 0,
        "frame_width": 0,
        "num_clips": 0,
        "error": message,
    }


def decompose_path(path: str, options: DecompositionOptions) -> dict:
    """Decompose one video file into the decomposition columns (see the module docstring).

    Any failure (unreadable file, no video stream, ...) is returned as an ``error`` string instead of raised,
    so that one broken file out of millions does not stop the run.
    """
    try:
        decomposition = decompose_video(
            path,
            transcode=options.transcode,
            fps=options.fps,
            clip_frames=options.clip_frames,
            max_clips=options.max_clips,
        )
    except Exception as error:  # noqa: BLE001 - every failure must end up in the error column
        return failed_row(options, f"{type(error).__name__}: {error}")
    motion = decomposition.motion_vectors.float().numpy().astype(options.motion_dtype)
    height, width = decomposition.frame_size
    return {
        "keyframes": [encode_keyframe(image, options.keyframe_format) for image in decomposition.keyframes],
        "motion_vectors": motion,
        "keyframe_indices": [int(index) for index in decomposition.keyframe_indices],
        "frame_types": decomposition.frame_types,
        "fps": float(decomposition.fps),
        "frame_height": int(height),
        "frame_width": int(width),
        "num_clips": int(motion.shape[0]),
        "error": None,
    }


def decompose_row(row: dict, options: DecompositionOptions) -> dict:
    """``Dataset.map`` function: decompose the row's ``video`` path."""
    return decompose_path(row["video"], options)


class ForkedWorkerFunction:
    """Wrap a ``Dataset.map`` function so that, in a forked worker process, torch runs on one thread.

    ``Dataset.map(num_proc=N)`` forks its workers. Once the main process has run torch on several threads (the
    motion tokenizer after the first shard), the forked child inherits an OpenMP thread pool whose threads do not
    exist in it, and its first parallel torch operation (``F.interpolate`` inside ``decompose_video``) waits for
    them forever. With one thread torch never enters an OpenMP parallel region (as PyTorch's own ``DataLoader``
    workers do); the N workers already keep the cores busy. In the main process (``num_proc=1``) nothing changes.
    """

    def __init__(self, function):
        self.function = function

    def __call__(self, row: dict) -> dict:
        """Run the wrapped function on one row, first pinning torch to one thread when in a worker process."""
        if multiprocess.parent_process() is not None and torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        return self.function(row)


def pick_column(columns: list[str], requested: str | None, candidates: tuple[str, ...], what: str) -> str:
    """Return the requested column, or the first candidate present; raise with the columns found otherwise."""
    if requested is not None:
        if requested not in columns:
            raise PreparationError(f"column {requested!r} for the {what} is not in the input (columns: {columns})")
        return requested
    for name in candidates:
        if name in columns:
            return name
    raise PreparationError(
        f"no {what} column found among {columns}; name it with --{what}-column (tried {', '.join(candidates)})"
    )


def load_table(path: Path, string_columns: tuple[str, ...] = ()) -> Dataset:
    """Load a CSV, JSON array or JSON Lines file as a `datasets.Dataset` (all columns kept).

    CSV/TSV columns named in ``string_columns`` (those present) are read as text: paths, captions and
    identifiers such as WebVid's ``page_dir`` ``001`` must not turn into the number 1. JSON keeps its own types.
    """
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return Dataset.from_csv(
            str(path),
            sep="\t" if suffix == ".tsv" else ",",
            keep_default_na=False,
            converters={name: str for name in string_columns},
        )
    if suffix in (".jsonl", ".json"):
        return Dataset.from_json(str(path))
    raise PreparationError(f"unsupported input {path}: use a .csv, .tsv, .json or .jsonl file")


def webvid_path(row: dict, video_root: str) -> str:
    """Local file of a WebVid row: ``<root>/<page_dir>/<videoid>.<ext of contentUrl>``."""
    suffix = Path(urlparse(str(row.get("contentUrl") or "")).path).suffix or ".mp4"
    return str(Path(video_root) / str(row["page_dir"]) / f"{row['videoid']}{suffix}")


def resolve_inputs(args: argparse.Namespace) -> Dataset:
    """Read ``--input`` and return a dataset with absolute ``video`` paths, ``caption`` and the other columns."""
    input_path = Path(args.input).resolve()
    if not input_path.is_file():
        raise PreparationError(f"input file {input_path} does not exist")
    named = tuple(name for name in (args.video_column, args.caption_column) if name)
    table = load_table(input_path, string_columns=(*WEBVID_COLUMNS, *PATH_COLUMNS, *CAPTION_COLUMNS, *named))
    video_root = str(Path(args.video_root).resolve() if args.video_root else input_path.parent)
    columns = list(table.column_names)
    if args.layout == "webvid":
        missing = [name for name in WEBVID_COLUMNS if name not in columns and name != "contentUrl"]
        if missing:
            raise PreparationError(f"--layout webvid needs the WebVid columns, {missing} missing from {columns}")
        return table.map(
            lambda row: {"video": webvid_path(row, video_root), "caption": str(row["name"])},
            remove_columns=["name"],
            desc="resolving WebVid paths",
        )
    path_column = pick_column(columns, args.video_column, PATH_COLUMNS, "video")
    caption_column = pick_column(columns, args.caption_column, CAPTION_COLUMNS, "caption")

    def resolve(row: dict) -> dict:
        path = Path(str(row[path_column])).expanduser()
        return {"video": str(path if path.is_absolute() else Path(video_root) / path), "caption": str(row[caption_column])}

    return table.map(
        resolve,
        remove_columns=[name for name in {path_column, caption_column} if name not in ("video", "caption")],
        desc="resolving video paths",
    )


def motion_token_dtype(codebook_size: int) -> str:
    """The smallest signed integer type holding every code id (int16 for the 1024 motion codes)."""
    return "int16" if codebook_size <= np.iinfo(np.int16).max + 1 else "int32"


def motion_token_features(num_tokens: int, codebook_size: int) -> dict:
    """Feature of the optional ``motion_token_ids`` column: [clips, num_tokens] 0-based codes."""
    return {"motion_token_ids": Array2D(shape=(None, num_tokens), dtype=motion_token_dtype(codebook_size))}


def encode_motion_clips(tokenizer, motions: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Motion token ids of every clip of a batch of rows, ``batch_size`` clips per forward.

    Args:
        tokenizer: a ``VideoLaVITMotionTokenizer``.
        motions: one ``[clips, 2, T, H, W]`` float32 array per row (``clips`` may be 0).
        batch_size: clips per tokenizer forward.

    Returns:
        One ``[clips, num_tokens]`` array of 0-based codes per row (int16, or int32 for large codebooks).
    """
    parameter = next(tokenizer.parameters())
    dtype = motion_token_dtype(tokenizer.config.codebook_size)
    counts = [len(motion) for motion in motions]
    ids = np.zeros((0, tokenizer.config.num_tokens), dtype=dtype)
    if sum(counts):
        stacked = torch.from_numpy(np.concatenate([motion for motion in motions if len(motion)]))
        with torch.inference_mode():
            chunks = [
                tokenizer.encode(chunk.to(device=parameter.device, dtype=parameter.dtype)).cpu()
                for chunk in stacked.split(batch_size)
            ]
        ids = torch.cat(chunks).numpy().astype(dtype)
    offsets = np.cumsum([0, *counts])
    return [ids[start:end] for start, end in zip(offsets[:-1], offsets[1:])]


def add_motion_tokens(shard: Dataset, work: Path, *, tokenizer, batch_size: int) -> Dataset:
    """Encode every clip's motion grid with a motion tokenizer: adds ``motion_token_ids`` [clips, num_tokens].

    Runs in the main process (batched, on the tokenizer's device) once a shard is decomposed; ``work`` holds the
    shard's cache files.
    """
    cache_file = work / "tokens.arrow"
    num_tokens = tokenizer.config.num_tokens

    def encode(batch: dict) -> dict:
        clips = [np.asarray(motion, dtype=np.float32) for motion in batch["motion_vectors"]]
        return {"motion_token_ids": encode_motion_clips(tokenizer, clips, batch_size)}

    features = Features({**shard.features, **motion_token_features(num_tokens, tokenizer.config.codebook_size)})
    # NumPy format: a clip grid arrives as one array instead of 34,560 nested Python floats
    return shard.with_format("numpy", columns=["motion_vectors"], output_all_columns=True).map(
        encode,
        batched=True,
        batch_size=batch_size,
        features=features,
        cache_file_name=str(cache_file),
        new_fingerprint=f"motion-tokens-{work.name}",
        desc="motion tokens",
    ).with_format(None)


def already_prepared(out_dir: Path, overwrite: bool) -> bool:
    """``True`` (and says so) when ``out_dir`` holds a finished preparation that ``--overwrite`` does not redo."""
    if (out_dir / DATASET_STATE_FILE).is_file() and not overwrite:
        errors = load_from_disk(str(out_dir))["error"]
        failures = sum(error is not None for error in errors)
        print(
            f"{out_dir} is already complete ({len(errors)} rows, {failures} failed); "
            "pass --overwrite to prepare it again",
            flush=True,
        )
        return True
    return False


def check_plan(out_dir: Path, plan: dict, overwrite: bool) -> None:
    """Record the run's plan in ``out_dir`` or, when resuming, refuse to continue under a different plan."""
    plan_path = plan_file(out_dir, plan.get("engine", "datasets"))
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    if plan_path.is_file():
        previous = json.loads(plan_path.read_text())
        if previous != plan:
            changed = sorted(key for key in plan.keys() | previous.keys() if plan.get(key) != previous.get(key))
            raise PreparationError(
                f"{out_dir} holds an unfinished run with other settings ({', '.join(changed)} differ); "
                "rerun with the same arguments to resume, or pass --overwrite to start again"
            )
        return
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(plan, indent=2))


def plan_file(out_dir: Path, engine: str) -> Path:
    """Where the plan of a run goes: beside the shards (``datasets``), or a hidden file next to the Parquet
    shards (``ray``), which ``load_dataset("parquet", data_dir=...)`` then does not take for data."""
    return out_dir / SHARDS_FOLDER / PLAN_FILE if engine == "datasets" else out_dir / f".{PLAN_FILE}"


def run_sharded_map(
    rows: Dataset,
    process_row,
    features: Features,
    out_dir: Path,
    *,
    num_shards: int,
    num_proc: int,
    finish_shard=None,
    remove_columns: list[str] | None = None,
    desc: str = "decomposing videos",
    unit: str = "videos",
) -> Dataset:
    """Map ``process_row`` over ``rows`` shard by shard, skipping shards a previous run finished.

    Each shard is mapped with ``num_proc`` worker processes (dropping ``remove_columns``), optionally post-processed by
    ``finish_shard(shard, work_dir) -> Dataset`` and saved under ``out_dir/shards``; a shard becomes
    visible only once it is completely written (written to a temporary folder, then renamed).
    Prints the throughput (``unit`` per second) of every shard and of the whole run. Returns the concatenated
    shards.
    """
    shard_root = out_dir / SHARDS_FOLDER
    num_shards = max(1, min(num_shards, len(rows)))
    shards, processed, started = [], 0, time.perf_counter()
    for index in range(num_shards):
        name = f"shard-{index:05d}-of-{num_shards:05d}"
        final = shard_root / name
        if final.is_dir():
            print(f"[{name}] already done, skipped", flush=True)
            shards.append(load_from_disk(str(final)))
            continue
        work = shard_root / f"{name}.work"
        work.mkdir(parents=True, exist_ok=True)
        shard_rows = rows.shard(num_shards, index, contiguous=True)
        shard_start = time.perf_counter()
        shard = shard_rows.map(
            ForkedWorkerFunction(process_row),
            num_proc=num_proc if num_proc > 1 else None,
            features=features,
            remove_columns=remove_columns,
            cache_file_name=str(work / "map.arrow"),
            desc=f"{desc} ({index + 1}/{num_shards})",
        )
        if finish_shard is not None:
            shard = finish_shard(shard, work)
        temporary = shard_root / f"{name}.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        shard.save_to_disk(str(temporary))
        temporary.rename(final)
        shutil.rmtree(work, ignore_errors=True)
        elapsed = time.perf_counter() - shard_start
        failures = sum(error is not None for error in shard["error"])
        processed += len(shard_rows)
        print(
            f"[{name}] {len(shard_rows)} rows ({failures} failed) in {elapsed:.1f} s: "
            f"{len(shard_rows) / max(elapsed, 1e-9):.2f} {unit}/s",
            flush=True,
        )
        shards.append(load_from_disk(str(final)))
    total = time.perf_counter() - started
    if processed:
        print(f"processed {processed} rows in {total:.1f} s: {processed / max(total, 1e-9):.2f} {unit}/s", flush=True)
    return concatenate_datasets(shards)


def finalize(dataset: Dataset, out_dir: Path, keep_shards: bool) -> Dataset:
    """Save the joined shards as one ``load_from_disk`` dataset in ``out_dir`` and drop the shard folders."""
    dataset.save_to_disk(str(out_dir / "merged.tmp"))
    for item in (out_dir / "merged.tmp").iterdir():
        item.replace(out_dir / item.name)
    (out_dir / "merged.tmp").rmdir()
    if not keep_shards:
        shutil.rmtree(out_dir / SHARDS_FOLDER)
    failures = sum(error is not None for error in dataset["error"])
    print(f"saved {len(dataset)} rows ({failures} failed) to {out_dir}", flush=True)
    return load_from_disk(str(out_dir))


def report_failures(dataset: Dataset) -> int:
    """Exit code of a finished preparation: 1 when every row failed (said on stderr, with the first error), else 0.

    The failure count itself is printed by :func:`finalize` in every case.
    """
    errors = [error for error in dataset["error"] if error is not None]
    if len(dataset) and len(errors) == len(dataset):
        print(
            f"error: all {len(dataset)} rows failed, nothing usable was prepared; first error: {errors[0]}",
            file=sys.stderr,
        )
        return 1
    return 0


def load_motion_tokenizer(path: str, device: str):
    """Load a saved ``VideoLaVITMotionTokenizer`` for ``--motion-tokenizer`` (float32, eval mode)."""
    from transformers_vlavit import VideoLaVITMotionTokenizer

    return VideoLaVITMotionTokenizer.from_pretrained(path).to(device).eval()


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of this script."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="CSV/TSV/JSON/JSONL file of (video path, caption) rows")
    parser.add_argument("--layout", choices=("plain", "webvid"), default="plain", help="column layout of --input")
    parser.add_argument("--video-root", help="folder relative video paths (WebVid: page_dir folders) start from")
    parser.add_argument("--video-column", help="column holding the video path (default: auto)")
    parser.add_argument("--caption-column", help="column holding the caption (default: auto)")
    parser.add_argument("--fps", type=int, default=DEFAULT_FPS, help="frame rate of the re-encoded stream")
    parser.add_argument("--motion-tokenizer", help="saved VideoLaVITMotionTokenizer: also store motion_token_ids")
    parser.add_argument("--device", default="cpu", help="device of the motion tokenizer")
    parser.add_argument("--token-batch-size", type=int, default=16, help="clips per motion tokenizer batch")
    parser.add_argument("--token-actors", type=int, default=1, help="--engine ray: motion tokenizer actors")
    add_preparation_arguments(parser)
    return parser


def add_preparation_arguments(parser: argparse.ArgumentParser) -> None:
    """Options both preparation scripts share: output, sharding, decomposition and storage settings."""
    parser.add_argument("--out", required=True, help="output folder (load_from_disk; Parquet shards with --engine ray)")
    parser.add_argument(
        "--engine", choices=ENGINES, default="datasets", help="datasets: Dataset.map here; ray: a Ray cluster"
    )
    parser.add_argument(
        "--ray-address", help="--engine ray: address of a running cluster (e.g. auto); default: start a local one"
    )
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes of Dataset.map")
    parser.add_argument("--num-shards", type=int, default=1, help="input shards, each saved when done (resume unit)")
    parser.add_argument("--max-clips", type=int, default=DEFAULT_MAX_CLIPS, help="most clips kept per video")
    parser.add_argument("--no-transcode", action="store_true", help=f"inputs already are {DEFAULT_FPS} fps MPEG-4 Part 2")
    parser.add_argument("--motion-dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--keyframe-format", choices=("png", "jpeg"), default="png")
    parser.add_argument("--keep-shards", action="store_true", help="keep the per-shard folders after merging")
    parser.add_argument("--overwrite", action="store_true", help="delete --out and start from scratch")


def decomposition_options(args: argparse.Namespace, **settings) -> DecompositionOptions:
    """The options of ``add_preparation_arguments`` (plus a script's own ``settings``) as ``DecompositionOptions``."""
    return DecompositionOptions(
        max_clips=args.max_clips,
        transcode=not args.no_transcode,
        motion_dtype=args.motion_dtype,
        keyframe_format=args.keyframe_format,
        **settings,
    )


def run_with_ray(
    args: argparse.Namespace,
    rows: Dataset,
    process_row,
    features: Features,
    out_dir: Path,
    *,
    load_tokenizer=None,
    unit: str = "videos",
) -> int:
    """``--engine ray``: map ``process_row`` on the Ray cluster, write Parquet shards to ``out_dir``; the exit code.

    The output columns are those of ``features``; ``load_tokenizer`` (``() -> motion tokenizer``) adds the
    ``motion_token_ids`` column in tokenizer actors.
    """
    from ray_engine import RayEngineError, run_ray_pipeline

    try:
        dataset = run_ray_pipeline(
            rows,
            process_row,
            features,
            out_dir,
            num_shards=args.num_shards,
            ray_address=args.ray_address,
            load_tokenizer=load_tokenizer,
            encode_clips=encode_motion_clips,
            device=getattr(args, "device", "cpu"),
            token_batch_size=getattr(args, "token_batch_size", 16),
            token_actors=getattr(args, "token_actors", 1),
            unit=unit,
        )
    except RayEngineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report_saved(dataset, out_dir)
    return report_failures(dataset)


def report_saved(dataset: Dataset, out_dir: Path) -> None:
    """Say how many rows (and failures) ``out_dir`` holds."""
    failures = sum(error is not None for error in dataset["error"])
    print(f"saved {len(dataset)} rows ({failures} failed) to {out_dir}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the preparation; returns the process exit code."""
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out).resolve()
    options = decomposition_options(args, fps=args.fps)
    try:
        if already_prepared(out_dir, args.overwrite):
            return 0
        rows = resolve_inputs(args)
        plan = {
            "input": str(Path(args.input).resolve()),
            "rows": len(rows),
            "num_shards": args.num_shards,
            "layout": args.layout,
            "motion_tokenizer": args.motion_tokenizer,
            "engine": args.engine,
            **asdict(options),
        }
        check_plan(out_dir, plan, args.overwrite)
    except PreparationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    features = Features({**rows.features, **clip_features(options)})
    if args.engine == "ray":
        load_tokenizer = None
        if args.motion_tokenizer:
            from transformers_vlavit import VideoLaVITMotionTokenizerConfig

            config = VideoLaVITMotionTokenizerConfig.from_pretrained(args.motion_tokenizer)
            features = Features({**features, **motion_token_features(config.num_tokens, config.codebook_size)})
            load_tokenizer = partial(load_motion_tokenizer, args.motion_tokenizer, args.device)
        return run_with_ray(
            args, rows, partial(decompose_row, options=options), features, out_dir, load_tokenizer=load_tokenizer
        )
    finish_shard = None
    if args.motion_tokenizer:
        tokenizer = load_motion_tokenizer(args.motion_tokenizer, args.device)
        finish_shard = partial(add_motion_tokens, tokenizer=tokenizer, batch_size=args.token_batch_size)
    dataset = run_sharded_map(
        rows,
        partial(decompose_row, options=options),
        features,
        out_dir,
        num_shards=args.num_shards,
        num_proc=args.num_proc,
        finish_shard=finish_shard,
    )
    return report_failures(finalize(dataset, out_dir, args.keep_shards))


if __name__ == "__main__":
    sys.exit(main())
