"""`vlavit decompose` and `vlavit demo`: keyframes, motion previews and summary.json."""

from __future__ import annotations

import json

from PIL import Image

from transformers_vlavit.cli import main
from transformers_vlavit.synthetic_video import write_synthetic_video


def test_decompose_writes_keyframes_previews_and_summary(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    write_synthetic_video(video, width=64, height=48, duration=13.0, fps=12.0)
    out = tmp_path / "out"
    assert main(["decompose", str(video), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"] == 2 and summary["keyframe_indices"] == [12, 36]
    assert summary["num_frames"] == 78 and summary["frame_types"].startswith("IPPPPPPPPPPPI")
    assert summary["frame_size"] == {"height": 48, "width": 64}
    assert summary["motion_vectors_shape"] == [2, 2, 24, 20, 36]
    assert summary["pixel_values_shape"] == [2, 3, 224, 224]
    assert set(summary["timings_s"]) == {"decompose", "image_processing", "write_previews", "total"}
    assert summary["files"] == ["keyframe_00.png", "motion_00.png", "keyframe_01.png", "motion_01.png"]
    assert Image.open(out / "keyframe_00.png").size == (64, 48)
    preview = Image.open(out / "motion_01.png")
    assert preview.width > preview.height  # 4 rows of 6 frames
    assert "2 clip(s) starting at frames [12, 36]" in capsys.readouterr().out


def test_decode_every_frame_decodes_the_frames_skipping_leaves_out(tmp_path):
    video = tmp_path / "clip.mp4"
    write_synthetic_video(video, width=64, height=48, duration=3.0, fps=30.0, codec_options={"bf": "3"})
    summaries = {}
    for name, flags in {"skipping": [], "every": ["--decode-every-frame"]}.items():
        assert main(["decompose", str(video), "--out", str(tmp_path / name), *flags]) == 0
        summaries[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert summaries["every"]["settings"]["skip_unused_frames"] is False
    assert summaries["every"]["decoded_source_frames"] == summaries["every"]["source"]["num_frames"] == 90
    assert summaries["skipping"]["decoded_source_frames"] < 90
    for name in ("keyframe_00.png", "motion_00.png"):
        assert (tmp_path / "skipping" / name).read_bytes() == (tmp_path / "every" / name).read_bytes()


def test_decompose_bad_input_exits_with_code_2(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    assert main(["decompose", str(tmp_path / "bad.mp4"), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out" / "summary.json").exists()


def test_demo_makes_its_own_sample(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--width", "64", "--height", "48", "--duration", "5"]) == 0
    # the source (5 s at 30 fps) and the 6 fps re-encoding the clips come from are told apart
    assert "sample.mp4: 150 frames at 30 fps (5 s), 64x48; re-encoded to 30 frames of MPEG-4 at 6 fps" in (
        capsys.readouterr().out
    )
    assert (out / "sample.mp4").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"] == 1 and (out / "keyframe_00.png").is_file() and (out / "motion_00.png").is_file()
