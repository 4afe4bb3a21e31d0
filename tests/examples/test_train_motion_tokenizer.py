"""``examples/train_motion_tokenizer.py``: loss falls, exact resume, prepared data, 2-process ``accelerate launch``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from datasets import Array5D, Dataset, Features, Value
from safetensors.torch import load_file

from transformers_vlavit.configuration_motion_tokenizer import VideoLaVITMotionTokenizerConfig

SCRIPT = "examples/train_motion_tokenizer.py"
# 8 frames of 8 x 8 cells -> 1 x 2 x 2 = 4 tokens: the real architecture (4 stages, EMA codebook) at toy size.
TEST_CONFIG = {
    "num_frames": 8,
    "grid_size": [8, 8],
    "hidden_size": 16,
    "num_attention_heads": 2,
    "stage_depths": [1, 1, 1, 1],
    "codebook_size": 32,
    "code_dim": 8,
    "codebook_ema": True,
    "ema_decay": 0.9,
}


@pytest.fixture
def config_file(tmp_path):
    """The test configuration written as a ``--config`` JSON file."""
    path = tmp_path / "motion_tokenizer_test.json"
    path.write_text(json.dumps(TEST_CONFIG))
    return path


def read_metrics(output_dir) -> dict[int, dict]:
    """``metrics.jsonl`` of a run: step -> merged metrics of that step."""
    metrics: dict[int, dict] = {}
    for line in (output_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "step" in record:
            metrics.setdefault(record.pop("step"), {}).update(record)
    return metrics


def train_command(scripts, config_file, output_dir, *extra):
    """A synthetic-data CPU training run of the test model."""
    return [
        scripts.python, SCRIPT, "--synthetic", "--config", config_file, "--output-dir", output_dir, "--cpu",
        "--logging-steps", "1", *extra,
    ]


def test_train_motion_tokenizer_loss_falls_on_a_fixed_batch(config_file, tmp_path, scripts):
    output_dir = tmp_path / "run"
    command = train_command(
        scripts, config_file, output_dir, "--synthetic-samples", "4", "--batch-size", "4", "--max-steps", "20",
        "--learning-rate", "1e-2", "--lr-scheduler", "constant", "--restart-dead-codes-every", "5",
    )
    result = scripts.run(command, tmp_path / "cache")
    metrics = read_metrics(output_dir)
    first, last = metrics[1], metrics[20]
    assert last["loss"] < 0.7 * first["loss"], (first, last)
    assert last["reconstruction_loss"] < first["reconstruction_loss"]
    assert all(0 < metrics[step]["codebook_usage"] <= 1 for step in range(1, 21))
    assert "restarted_codes" in metrics[5]
    assert "first loss" in result.stderr
    saved = load_file(output_dir / "model.safetensors")
    assert "quantizer.ema_cluster_size" in saved and (output_dir / "config.json").is_file()


def test_train_motion_tokenizer_resume_restores_step_optimizer_and_rng(config_file, tmp_path, scripts):
    # 12 clips in batches of 2: the checkpoint at step 4 falls mid-epoch; the dead-code restart at step 6 draws
    # from the global RNG, and the warm-up scheduler and Adam moments shape steps 5 and 6.
    common = (
        "--synthetic-samples", "12", "--batch-size", "2", "--max-steps", "6", "--checkpointing-steps", "2",
        "--restart-dead-codes-every", "2", "--learning-rate", "3e-3", "--warmup-steps", "3",
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    commands = [
        train_command(scripts, config_file, straight, *common),
        train_command(scripts, config_file, resumed, *common, "--stop-after-steps", "4"),
        train_command(scripts, config_file, resumed, *common, "--resume-from-checkpoint", "latest"),
    ]
    results = [scripts.run(command, tmp_path / "cache") for command in commands]

    assert json.loads((resumed / "checkpoint-4" / "training_state.json").read_text()) == {
        "step": 4, "epoch": 0, "batches_in_epoch": 4,
    }
    assert "Stopped at step 4 of 6" in results[1].stderr
    assert "Resumed from" in results[2].stderr and "at step 4 (epoch 0, batch 4)" in results[2].stderr
    expected, actual = read_metrics(straight), read_metrics(resumed)
    assert sorted(actual) == [1, 2, 3, 4, 5, 6]
    for step in (5, 6):
        assert actual[step] == expected[step], step
    assert expected[6]["restarted_codes"] > 0
    straight_weights, resumed_weights = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert straight_weights.keys() == resumed_weights.keys()
    for name, tensor in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=0, atol=0, msg=name)


def test_train_data_clips_come_from_the_prepared_dataset(tmp_path, scripts):
    module = scripts.load(scripts.root / SCRIPT)
    config = VideoLaVITMotionTokenizerConfig(**TEST_CONFIG)
    grid = (2, 8, 8, 8)
    features = Features({"motion_vectors": Array5D(shape=(None, *grid), dtype="float16"), "error": Value("string")})
    rng = np.random.default_rng(0)
    videos = [rng.standard_normal((2, *grid)).astype(np.float16), np.zeros((0, *grid), np.float16), rng.standard_normal((1, *grid)).astype(np.float16)]
    Dataset.from_dict(
        {"motion_vectors": videos, "error": [None, "VideoDecodeError: broken", None]}, features=features
    ).save_to_disk(str(tmp_path / "prepared"))

    clips = module.prepared_motion_clips(str(tmp_path / "prepared"), config).with_format("numpy")

    assert len(clips) == 3
    np.testing.assert_array_equal(clips["motion_vectors"], np.concatenate([videos[0], videos[2]]).astype(np.float32))
    with pytest.raises(module.TrainingSetupError, match="num_frames/grid_size"):
        module.prepared_motion_clips(str(tmp_path / "prepared"), VideoLaVITMotionTokenizerConfig())


def test_accelerate_configs_load(scripts):
    from accelerate.commands.config.config_args import ClusterConfig

    expected = {
        "single_process.yaml": "NO",
        "ddp.yaml": "MULTI_GPU",
        "fsdp.yaml": "FSDP",
        "deepspeed_zero2.yaml": "DEEPSPEED",
        "deepspeed_zero3.yaml": "DEEPSPEED",
    }
    for name, distributed_type in expected.items():
        path = scripts.examples / "configs" / name
        config = ClusterConfig.from_yaml_file(str(path))
        assert config.distributed_type == distributed_type, name
        assert config.mixed_precision == "bf16", name
    assert yaml.safe_load((scripts.examples / "configs" / "fsdp.yaml").read_text())["fsdp_config"]["fsdp_version"] == 2
    stages = [ClusterConfig.from_yaml_file(str(scripts.examples / "configs" / f"deepspeed_zero{stage}.yaml")) for stage in (2, 3)]
    assert [config.deepspeed_config["zero_stage"] for config in stages] == [2, 3]


def test_accelerate_launch_two_processes_trains(config_file, tmp_path, scripts):
    output_dir = tmp_path / "ddp"
    command = [
        scripts.python, "-m", "accelerate.commands.launch", "--config_file", scripts.examples / "configs" / "ddp.yaml",
        "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(scripts.free_port()),
        SCRIPT, "--cpu", "--synthetic", "--config", config_file, "--output-dir", output_dir,
        "--synthetic-samples", "8", "--batch-size", "2", "--max-steps", "4", "--checkpointing-steps", "2",
        "--restart-dead-codes-every", "2", "--logging-steps", "1",
    ]
    result = scripts.run(command, tmp_path / "cache", timeout=400)

    assert "2 processes" in result.stderr
    metrics = read_metrics(output_dir)
    assert sorted(step for step in metrics if "loss" in metrics[step]) == [1, 2, 3, 4]
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        assert (output_dir / checkpoint / "random_states_0.pkl").is_file()
        assert (output_dir / checkpoint / "random_states_1.pkl").is_file()
    assert (output_dir / "model.safetensors").is_file()


def test_train_decoder_only_refits_the_decoder_and_keeps_every_motion_id(config_file, tmp_path, scripts):
    first = tmp_path / "first"
    scripts.run(train_command(scripts, config_file, first, "--synthetic-samples", "8", "--batch-size", "4",
                              "--max-steps", "3", "--learning-rate", "3e-3"), tmp_path / "cache")  # fmt: skip
    refit = tmp_path / "refit"
    command = [
        scripts.python, SCRIPT, "--synthetic", "--model-name-or-path", first, "--train-decoder-only",
        "--output-dir", refit, "--cpu", "--logging-steps", "1", "--synthetic-samples", "8", "--batch-size", "4",
        "--max-steps", "15", "--learning-rate", "1e-2", "--lr-scheduler", "constant",
    ]  # fmt: skip
    scripts.run(command, tmp_path / "cache")
    before, after = load_file(first / "model.safetensors"), load_file(refit / "model.safetensors")
    assert before.keys() == after.keys()
    decoder_side = [name for name in before if name.startswith(("decoder.", "motion_projection."))]
    assert decoder_side and any(not torch.equal(before[name], after[name]) for name in decoder_side)
    # encoder, code projection, codebook and its EMA statistics untouched: the same ids for every clip
    for name in before.keys() - set(decoder_side):
        assert torch.equal(before[name], after[name]), name
    metrics = read_metrics(refit)
    assert metrics[15]["reconstruction_loss"] < metrics[1]["reconstruction_loss"], (metrics[1], metrics[15])

    from transformers_vlavit.modeling_motion_tokenizer import VideoLaVITMotionTokenizer

    old, new = VideoLaVITMotionTokenizer.from_pretrained(first), VideoLaVITMotionTokenizer.from_pretrained(refit)
    motion = 0.3 * torch.randn(3, 2, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(old.encode(motion), new.encode(motion))


def test_train_decoder_only_needs_a_trained_tokenizer_and_a_frozen_codebook(config_file, tmp_path, scripts, capsys):
    script = scripts.load(scripts.root / SCRIPT)
    common = ["--synthetic", "--output-dir", str(tmp_path / "run"), "--max-steps", "1", "--train-decoder-only"]
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([*common, "--config", str(config_file)])
    assert exit_info.value.code == 2 and "--model-name-or-path" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([*common, "--model-name-or-path", str(tmp_path), "--restart-dead-codes-every", "5"])
    assert exit_info.value.code == 2 and "frozen" in capsys.readouterr().err
