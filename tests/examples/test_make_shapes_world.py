"""``datasets/make_shapes_world.py``: the world on disk goes through the project's own data scripts unchanged."""

from __future__ import annotations

import csv
import json

from datasets import load_from_disk


def test_make_shapes_world_feeds_the_data_scripts(scripts, tmp_path):
    world = tmp_path / "world"
    command = [scripts.python, scripts.data_scripts / "make_shapes_world.py", "--out", world,
               "--num-videos", "24", "--seed", "5", "--num-proc", "2", "--test-fraction", "0.3"]
    scripts.run(command, tmp_path)
    summary = json.loads((world / "world.json").read_text())
    assert sum(summary["videos_per_split"].values()) == 24
    rows = [json.loads(line) for line in (world / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and all((world / row["video"]).is_file() for row in rows)
    assert not any(row["held_out"] for row in rows if row["split"] == "train")
    for row in rows:
        assert row["qa"][0]["answer"] == row["colour"] and len(row["positions"]) == 24 * (4 if row["num_clips"] == 1 else 10)

    # a rerun with the same settings keeps the files; other settings are refused with exit 2
    before = {row["video"]: (world / row["video"]).stat().st_mtime_ns for row in rows}
    scripts.run(command, tmp_path)
    assert before == {row["video"]: (world / row["video"]).stat().st_mtime_ns for row in rows}
    import subprocess

    refused = subprocess.run([str(part) for part in command[:-4]] + ["--seed", "6"], cwd=scripts.root,
                             env=scripts.env(tmp_path), capture_output=True, text=True)
    assert refused.returncode == 2 and "other settings" in refused.stderr

    test_rows = list(csv.DictReader((world / "test_video_text.csv").open()))
    scripts.run([scripts.python, scripts.data_scripts / "prepare_video_text.py", "--input", world / "test_video_text.csv",
                 "--out", tmp_path / "vt"], tmp_path)
    prepared = load_from_disk(str(tmp_path / "vt"))
    assert len(prepared) == len(test_rows) and all(error is None for error in prepared["error"])
    assert [row["caption"] for row in test_rows] == prepared["caption"]

    scripts.run([scripts.python, scripts.data_scripts / "prepare_instructions.py", "--input",
                 world / "test_instructions.json", "--out", tmp_path / "sft"], tmp_path)
    sft = load_from_disk(str(tmp_path / "sft"))
    assert all(error is None for error in sft["error"])
    first = sft[0]["messages"]
    assert first[0]["content"].startswith("<video>\n") and first[-1]["role"] == "assistant"

    qa = [json.loads(line) for line in (world / "test_qa.jsonl").read_text().splitlines()]
    i2v = [json.loads(line) for line in (world / "test_i2v.jsonl").read_text().splitlines()]
    assert {row["type"] for row in qa} >= {"colour", "shape", "direction"}
    assert all((world / row["image"]).is_file() for row in i2v)
