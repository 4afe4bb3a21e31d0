"""``--engine ray`` of the preparation scripts: the same rows as the ``datasets`` engine, as Parquet shards.

The tests start their own local Ray instance (2 CPUs) and point the scripts at it with ``--ray-address``,
as a multi-node run does. Ray is an optional extra (``pip install -e ".[distributed]"``), not part of the
test extra: without it these tests are skipped.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from datasets import load_from_disk

from transformers_vlavit.configuration_motion_tokenizer import VideoLaVITMotionTokenizerConfig
from transformers_vlavit.modeling_motion_tokenizer import VideoLaVITMotionTokenizer
from transformers_vlavit.prepared_data import load_prepared_dataset
from transformers_vlavit.synthetic_video import write_synthetic_video

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[distributed]'")
pytest.importorskip("ray.data", reason="Ray Data is missing: pip install 'ray[data]'")

VIDEOS = [
    ("clip_a.mp4", "a red square moves", 3.0),
    ("clip_b.mp4", "panning texture", 5.0),
    ("clip_c.mp4", "long pan", 9.0),
]


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """A local Ray instance of 2 CPUs for the module; the scripts connect to it as to a cluster."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Three synthetic videos and one file that is no video (CSV), and a tiny saved motion tokenizer."""
    folder = tmp_path_factory.mktemp("videos")
    for index, (name, _, seconds) in enumerate(VIDEOS):
        write_synthetic_video(folder / name, width=96, height=64, duration=seconds, fps=12, seed=index)
    (folder / "broken.mp4").write_bytes(b"\x00 not a video container")
    rows = [(name, caption) for name, caption, _ in VIDEOS]
    rows.insert(1, ("broken.mp4", "this file is not a video"))
    with (folder / "videos.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "caption", "source"])
        writer.writerows((name, caption, f"row{index}") for index, (name, caption) in enumerate(rows))
    config = VideoLaVITMotionTokenizerConfig(
        hidden_size=16, num_attention_heads=2, stage_depths=(1, 1, 1, 1), codebook_size=64, code_dim=8
    )
    torch.manual_seed(0)
    VideoLaVITMotionTokenizer(config).save_pretrained(folder / "motion_tokenizer")
    return folder


def video_text_command(inputs, out_dir, *extra):
    return [
        sys.executable, "datasets/prepare_video_text.py", "--input", inputs / "videos.csv", "--out", out_dir,
        "--num-shards", "2", "--motion-tokenizer", inputs / "motion_tokenizer", "--token-batch-size", "2", *extra,
    ]


def assert_same_rows(expected: datasets.Dataset, actual: datasets.Dataset) -> None:
    """Row by row, column by column equality (images compared as pixels, arrays exactly)."""
    assert actual.column_names == expected.column_names
    assert len(actual) == len(expected)
    for index, (want, got) in enumerate(zip(expected, actual)):
        for column in expected.column_names:
            a, b = want[column], got[column]
            if column in ("keyframes", "images"):
                assert len(a) == len(b), (index, column)
                assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b)), (index, column)
            elif column in ("motion_vectors", "motion_token_ids"):
                assert np.array_equal(np.asarray(a), np.asarray(b)), (index, column)
                assert np.asarray(a).shape == np.asarray(b).shape, (index, column)
            else:
                assert a == b, (index, column, a, b)


def test_ray_engine_matches_the_datasets_engine_and_resumes(inputs, ray_address, tmp_path, scripts):
    reference_dir, ray_dir = tmp_path / "datasets_out", tmp_path / "ray_out"
    scripts.run(video_text_command(inputs, reference_dir), tmp_path / "cache")
    ray_run = video_text_command(inputs, ray_dir, "--engine", "ray", "--ray-address", ray_address)
    result = scripts.run(ray_run, tmp_path / "cache")
    reference = load_from_disk(str(reference_dir))
    shards = sorted(path.name for path in ray_dir.glob("*.parquet"))
    assert shards == ["shard-00000-of-00002.parquet", "shard-00001-of-00002.parquet"]
    assert "saved 4 rows (1 failed)" in result.stdout

    # the Parquet folder as datasets and the training scripts read it
    prepared = datasets.load_dataset(
        "parquet", data_dir=str(ray_dir), split="train", cache_dir=str(tmp_path / "cache" / "parquet")
    )
    assert_same_rows(reference, load_prepared_dataset(ray_dir))
    assert prepared.features["motion_vectors"] == reference.features["motion_vectors"]
    assert isinstance(prepared.features["keyframes"].feature, datasets.Image)
    assert_same_rows(reference, prepared)
    assert reference[1]["error"].startswith("VideoDecodeError") and reference[0]["num_clips"] >= 1
    assert all(len(ids) == clips for ids, clips in zip(reference["motion_token_ids"], reference["num_clips"]))

    # resume: a lost shard is recomputed, the finished one is skipped and left as it was
    kept = ray_dir / shards[0]
    kept_stamp = kept.stat().st_mtime_ns
    (ray_dir / shards[1]).unlink()
    again = scripts.run(ray_run, tmp_path / "cache")
    assert f"[{shards[0]}] already done, skipped" in again.stdout
    assert f"[{shards[1]}] 2 rows (0 failed)" in again.stdout
    assert kept.stat().st_mtime_ns == kept_stamp
    assert_same_rows(reference, load_prepared_dataset(ray_dir))

    # a resume with other settings is refused, as with the datasets engine
    changed = subprocess_run(scripts, video_text_command(inputs, ray_dir, "--engine", "ray", "--max-clips", "1"), tmp_path)
    assert changed.returncode == 2 and "max_clips" in changed.stderr


def subprocess_run(scripts, command, tmp_path):
    """Run a script that is expected to fail; its completed process."""
    return subprocess.run(
        [str(part) for part in command], cwd=scripts.root, env=scripts.env(tmp_path / "cache"),
        capture_output=True, text=True, timeout=300,
    )


def test_ray_engine_of_prepare_instructions_matches_the_datasets_engine(inputs, ray_address, tmp_path, scripts):
    rows = [
        {"id": "vid", "video": "clip_a.mp4", "conversations": [
            {"from": "human", "value": "<video>\nDescribe it."}, {"from": "gpt", "value": "Shapes move."}]},
        {"id": "bad", "video": "broken.mp4", "conversations": [
            {"from": "human", "value": "<video>\nAnd this?"}, {"from": "gpt", "value": "Nothing."}]},
        {"video_id": "clip_c", "q": "What pans?", "a": "The texture."},
    ]
    source = tmp_path / "instructions.json"
    source.write_text(json.dumps(rows))
    base = [
        sys.executable, "datasets/prepare_instructions.py", "--input", source, "--media-root", inputs,
        "--num-shards", "2",
    ]
    scripts.run([*base, "--out", tmp_path / "datasets_out"], tmp_path / "cache")
    ray_run = [*base, "--out", tmp_path / "ray_out", "--engine", "ray", "--ray-address", ray_address]
    scripts.run(ray_run, tmp_path / "cache")
    reference = load_from_disk(str(tmp_path / "datasets_out"))
    assert reference["error"][1].startswith("InstructionRowError") and reference["error"][2] is None
    assert_same_rows(reference, load_prepared_dataset(tmp_path / "ray_out"))
