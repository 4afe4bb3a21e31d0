"""write_tiny_detokenizers: folder layout, shared tokenizers, reproducibility, loading."""

from __future__ import annotations

import json

import torch
from diffusers import DiffusionPipeline

from diffusers_vlavit import VideoLaVITKeyframePipeline, VideoLaVITVideoPipeline, write_tiny_detokenizers
from transformers_vlavit import VideoLaVITConfig, VideoLaVITMotionTokenizer, VideoLaVITVisualTokenizer


def test_writes_loadable_keyframe_and_video_pipelines(tmp_path):
    paths = write_tiny_detokenizers(tmp_path, seed=0)
    assert paths == {"keyframe": tmp_path / "keyframe", "video": tmp_path / "video"}
    index = json.loads((paths["video"] / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_video", "VideoLaVITVideoPipeline"]
    assert index["vae"] == ["diffusers", "AutoencoderKLTemporalDecoder"]
    assert not list(tmp_path.rglob("*.bin")), "weights must be safetensors"

    keyframe = DiffusionPipeline.from_pretrained(paths["keyframe"], trust_remote_code=True)
    video = DiffusionPipeline.from_pretrained(paths["video"], trust_remote_code=True)
    # the folders' own copies of the code
    assert type(keyframe).__name__ == VideoLaVITKeyframePipeline.__name__
    assert type(video).__name__ == VideoLaVITVideoPipeline.__name__
    assert (tmp_path / "pipeline_video_lavit.py").is_file(), "the end-to-end pipeline's code"
    # keyframe decoder input = visual codebook rows; U-Net channels = 4 noisy + 4 keyframe + 2 motion
    assert keyframe.keyframe_decoder.config.code_dim == keyframe.visual_tokenizer.config.code_dim
    assert video.unet.config.in_channels == 2 * video.vae.config.latent_channels + 2
    assert video.unet.config.cross_attention_dim == video.motion_encoder.config.out_channels
    assert tuple(video.unet.config.motion_grid_size) == tuple(video.motion_encoder.config.grid_size)


def test_same_seed_same_weights_and_given_tokenizers_are_kept(tmp_path):
    config = VideoLaVITConfig.tiny()
    torch.manual_seed(123)
    visual = VideoLaVITVisualTokenizer(config.visual_tokenizer_config)
    motion = VideoLaVITMotionTokenizer(config.motion_tokenizer_config)
    first = write_tiny_detokenizers(tmp_path / "a", seed=3, visual_tokenizer=visual, motion_tokenizer=motion)
    second = write_tiny_detokenizers(tmp_path / "b", seed=3)

    loaded = VideoLaVITKeyframePipeline.from_pretrained(first["keyframe"], trust_remote_code=True)
    codes = torch.arange(8)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.visual_tokenizer.get_code_embeddings(codes), visual.get_code_embeddings(codes)
        )
    video = VideoLaVITVideoPipeline.from_pretrained(first["video"], trust_remote_code=True)
    with torch.no_grad():
        torch.testing.assert_close(
            video.motion_tokenizer.get_code_embeddings(codes), motion.get_code_embeddings(codes)
        )
    for name in ("keyframe_decoder", "unet"):
        a = (first["keyframe"] / name / "diffusion_pytorch_model.safetensors").read_bytes()
        b = (second["keyframe"] / name / "diffusion_pytorch_model.safetensors").read_bytes()
        assert a == b, f"{name} differs between two builds with the same seed"
    # building does not disturb the caller's random stream
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    write_tiny_detokenizers(tmp_path / "c", seed=0)
    torch.testing.assert_close(torch.rand(3), expected)
