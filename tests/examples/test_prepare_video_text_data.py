"""``datasets/prepare_video_text.py``: decomposition through ``Dataset.map``, error column, resume, WebVid layout."""

from __future__ import annotations

import csv
import json
import shutil
import sys

import datasets
import numpy as np
import pytest
import torch
from datasets import load_from_disk

from transformers_vlavit.configuration_motion_tokenizer import VideoLaVITMotionTokenizerConfig
from transformers_vlavit.modeling_motion_tokenizer import VideoLaVITMotionTokenizer
from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.video_decomposition import decompose_video

SCRIPT = "datasets/prepare_video_text.py"
# (file, caption, seconds): 3 s gives one padded clip, 9 s several candidate starts
VIDEOS = [("clip_a.mp4", "a red square moves", 3.0), ("clip_b.mp4", "panning texture", 5.0), ("clip_c.mp4", "long pan", 9.0)]
BROKEN = ("broken.mp4", "this file is not a video")


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    """Three small synthetic H.264 videos, one file that is no video, and a CSV listing all four."""
    folder = tmp_path_factory.mktemp("videos")
    for index, (name, _, seconds) in enumerate(VIDEOS):
        write_synthetic_video(folder / name, width=128, height=96, duration=seconds, fps=12, seed=index)
    (folder / BROKEN[0]).write_bytes(b"\x00 definitely not a video container")
    rows = [(name, caption) for name, caption, _ in VIDEOS]
    rows.insert(1, BROKEN)
    with (folder / "videos.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "caption", "source"])
        writer.writerows((name, caption, f"row{index}") for index, (name, caption) in enumerate(rows))
    return folder


@pytest.fixture(scope="module")
def motion_tokenizer_dir(tmp_path_factory):
    """A tiny motion tokenizer at the real grid (24 x 20 x 36) saved with ``save_pretrained``."""
    config = VideoLaVITMotionTokenizerConfig(hidden_size=16, num_attention_heads=2, stage_depths=(1, 1, 1, 1), codebook_size=64, code_dim=8)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("motion_tokenizer")
    VideoLaVITMotionTokenizer(config).save_pretrained(folder)
    return folder


def prepare_command(video_folder, out_dir, motion_tokenizer_dir, *extra):
    """Command line of a 2-process, 2-shard preparation that also stores motion token ids."""
    return [
        sys.executable, SCRIPT, "--input", str(video_folder / "videos.csv"), "--out", str(out_dir),
        "--num-proc", "2", "--num-shards", "2", "--motion-tokenizer", str(motion_tokenizer_dir), *extra,
    ]


@pytest.fixture(scope="module")
def prepared(video_folder, motion_tokenizer_dir, tmp_path_factory, scripts):
    """The preparation run once for the module: ``(output folder, completed process)``.

    Torch runs on two threads here (the other tests use one): the motion tokenizer then starts an OpenMP pool in
    the main process before the second shard's workers are forked, which is what hung the README's WebVid command.
    """
    work = tmp_path_factory.mktemp("prepared")
    result = scripts.run(
        prepare_command(video_folder, work / "out", motion_tokenizer_dir, "--keep-shards"),
        work / "cache",
        timeout=180,
        env={"OMP_NUM_THREADS": "2"},
    )
    return work / "out", result


def test_prepare_data_two_shards_two_workers_with_threaded_torch_finish(prepared):
    out_dir, result = prepared
    for name in ("shard-00000-of-00002", "shard-00001-of-00002"):
        assert f"[{name}] 2 rows" in result.stdout
        shard = load_from_disk(str(out_dir / "shards" / name))
        assert "motion_token_ids" in shard.column_names


def test_prepare_data_keeps_errors_in_a_column(prepared, video_folder):
    out_dir, result = prepared
    dataset = load_from_disk(str(out_dir))
    assert len(dataset) == 4
    assert dataset["caption"] == [VIDEOS[0][1], BROKEN[1], VIDEOS[1][1], VIDEOS[2][1]]
    assert dataset["source"] == ["row0", "row1", "row2", "row3"]
    broken = dataset[1]
    assert broken["video"] == str(video_folder / BROKEN[0])
    assert "VideoDecodeError" in broken["error"] and BROKEN[0] in broken["error"]
    assert broken["num_clips"] == 0 and broken["keyframes"] == []
    for row in (dataset[0], dataset[2], dataset[3]):
        assert row["error"] is None
        assert row["num_clips"] >= 1
        assert len(row["keyframes"]) == row["num_clips"] == len(row["keyframe_indices"])
        assert row["keyframes"][0].size == (128, 96)
        assert (row["frame_height"], row["frame_width"]) == (96, 128)
        assert set(row["frame_types"]) <= set("IP") and row["frame_types"][0] == "I"
    assert dataset.features["motion_vectors"].dtype == "float16"
    assert "1 failed" in result.stdout and "videos/s" in result.stdout


def test_prepare_data_motion_matches_decompose_video(prepared, video_folder):
    out_dir, _ = prepared
    row = load_from_disk(str(out_dir)).with_format("numpy")[3]
    expected = decompose_video(video_folder / VIDEOS[2][0])
    stored = row["motion_vectors"]
    assert stored.shape == tuple(expected.motion_vectors.shape)
    np.testing.assert_allclose(stored, expected.motion_vectors.numpy().astype(np.float16), rtol=0, atol=0)
    assert list(row["keyframe_indices"]) == expected.keyframe_indices
    assert np.array_equal(np.asarray(load_from_disk(str(out_dir))[3]["keyframes"][0]), np.asarray(expected.keyframes[0]))


def test_prepare_data_motion_token_ids_match_the_tokenizer(prepared, motion_tokenizer_dir):
    out_dir, _ = prepared
    dataset = load_from_disk(str(out_dir)).with_format("numpy")
    tokenizer = VideoLaVITMotionTokenizer.from_pretrained(motion_tokenizer_dir).eval()
    assert dataset[1]["motion_token_ids"].shape == (0, tokenizer.config.num_tokens)
    for index in (0, 2, 3):
        row = dataset[index]
        with torch.inference_mode():
            expected = tokenizer.encode(torch.from_numpy(row["motion_vectors"]).float())
        assert row["motion_token_ids"].shape == (row["num_clips"], 135)
        assert np.array_equal(row["motion_token_ids"], expected.numpy())


def test_prepare_data_resume_skips_finished_shards(prepared, video_folder, motion_tokenizer_dir, tmp_path, scripts, capsys):
    source, _ = prepared
    out_dir = tmp_path / "out"
    shutil.copytree(source, out_dir)
    # Simulate a run interrupted after its first shard: no merged dataset, no second shard.
    for name in ("state.json", "dataset_info.json"):
        (out_dir / name).unlink()
    for arrow in out_dir.glob("data-*.arrow"):
        arrow.unlink()
    shutil.rmtree(out_dir / "shards" / "shard-00001-of-00002")
    first_shard = out_dir / "shards" / "shard-00000-of-00002"
    before = {item.name: item.stat().st_mtime_ns for item in first_shard.iterdir()}

    result = scripts.run(prepare_command(video_folder, out_dir, motion_tokenizer_dir, "--keep-shards"), tmp_path / "cache")

    assert "[shard-00000-of-00002] already done, skipped" in result.stdout
    assert "[shard-00001-of-00002] 2 rows (0 failed)" in result.stdout  # the broken file sits in shard 0
    assert {item.name: item.stat().st_mtime_ns for item in first_shard.iterdir()} == before
    assert (out_dir / "shards" / "shard-00001-of-00002").is_dir()
    dataset = load_from_disk(str(out_dir))
    assert dataset["caption"] == load_from_disk(str(source))["caption"]
    module = scripts.load(scripts.root / SCRIPT)
    assert module.main([str(part) for part in prepare_command(video_folder, out_dir, motion_tokenizer_dir)[2:]]) == 0
    assert "already complete (4 rows, 1 failed)" in capsys.readouterr().out
    assert np.array_equal(
        load_from_disk(str(out_dir)).with_format("numpy")[0]["motion_vectors"],
        load_from_disk(str(source)).with_format("numpy")[0]["motion_vectors"],
    )


def test_prepare_data_refuses_to_resume_with_other_settings(video_folder, tmp_path, scripts, monkeypatch, capsys):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    out_dir = tmp_path / "out"
    (out_dir / "shards").mkdir(parents=True)
    plan = {"input": str(video_folder / "videos.csv"), "rows": 4, "num_shards": 2, "max_clips": 3}
    (out_dir / "shards" / "plan.json").write_text(json.dumps(plan))
    module = scripts.load(scripts.root / SCRIPT)
    assert module.main(["--input", str(video_folder / "videos.csv"), "--out", str(out_dir), "--num-shards", "2"]) == 2
    message = capsys.readouterr().err
    assert "max_clips" in message and "--overwrite" in message


def test_prepare_data_webvid_layout_resolves_paths(tmp_path, scripts, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    module = scripts.load(scripts.root / SCRIPT)
    table = tmp_path / "results_2M_val.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        writer.writerow(["1066712", "https://example.com/videos/1066712.mp4?x=1", "PT00H00M10S", "006001_006050", "Aerial city"])
        writer.writerow(["31353427", "https://example.com/v/31353427", "PT00H00M15S", "016401_016450", "Sea waves"])
    args = module.build_parser().parse_args(
        ["--input", str(table), "--out", str(tmp_path / "out"), "--layout", "webvid", "--video-root", str(tmp_path / "videos")]
    )
    rows = module.resolve_inputs(args)
    assert rows["video"] == [
        str(tmp_path / "videos" / "006001_006050" / "1066712.mp4"),
        str(tmp_path / "videos" / "016401_016450" / "31353427.mp4"),
    ]
    assert rows["caption"] == ["Aerial city", "Sea waves"]
    assert "name" not in rows.column_names and rows["videoid"] == ["1066712", "31353427"]


def write_webvid_table(path, rows) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        writer.writerows(rows)


def test_prepare_data_webvid_numeric_folder_names_stay_strings(tmp_path, scripts, monkeypatch, capsys):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    (tmp_path / "videos" / "001").mkdir(parents=True)
    write_synthetic_video(tmp_path / "videos" / "001" / "0042.mp4", width=32, height=32, duration=1.0, fps=6)
    table = tmp_path / "webvid.csv"
    write_webvid_table(table, [["0042", "https://example.com/0042.mp4", "PT00H00M01S", "001", "007"]])
    module = scripts.load(scripts.root / SCRIPT)
    arguments = ["--input", str(table), "--layout", "webvid", "--video-root", str(tmp_path / "videos")]
    assert module.main([*arguments, "--out", str(tmp_path / "out")]) == 0
    row = load_from_disk(str(tmp_path / "out"))[0]
    assert row["error"] is None and row["num_clips"] == 1
    assert row["video"] == str(tmp_path / "videos" / "001" / "0042.mp4")
    assert (row["videoid"], row["caption"]) == ("0042", "007")
    assert "saved 1 rows (0 failed)" in capsys.readouterr().out


def test_prepare_data_exits_non_zero_with_a_count_when_every_row_failed(tmp_path, scripts, monkeypatch, capsys):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    table = tmp_path / "webvid.csv"
    write_webvid_table(table, [["1", "", "PT1S", "002", "a"], ["2", "", "PT1S", "002", "b"]])
    module = scripts.load(scripts.root / SCRIPT)
    arguments = ["--input", str(table), "--layout", "webvid", "--video-root", str(tmp_path / "nowhere")]
    assert module.main([*arguments, "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "saved 2 rows (2 failed)" in captured.out
    assert "all 2 rows failed" in captured.err and "file not found" in captured.err
    assert str(tmp_path / "nowhere" / "002" / "1.mp4") in captured.err
