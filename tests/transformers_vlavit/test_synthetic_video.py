"""The synthetic sample videos that the demo, the tests and the training examples make with PyAV."""

from __future__ import annotations

import av

from transformers_vlavit import decompose_video
from transformers_vlavit.synthetic_video import write_training_sample_video


def test_training_sample_written_in_place_without_leftovers(tmp_path):
    path = tmp_path / "sample.mp4"
    assert write_training_sample_video(path, fps=12, seed=3) is None
    assert [p.name for p in tmp_path.iterdir()] == ["sample.mp4"]  # the temporary file was renamed
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (160, 128)
        assert sum(1 for _ in container.decode(stream)) == 54  # 4.5 s at 12 fps

    # rewriting (as every rank of a multi-process launch does) replaces it with a complete file again
    # (x264's threads make the bytes vary slightly between runs, not the decoded content's layout)
    write_training_sample_video(path, fps=12, seed=3)
    assert [p.name for p in tmp_path.iterdir()] == ["sample.mp4"]
    assert decompose_video(path).motion_vectors.shape == (1, 2, 24, 20, 36)


def test_training_sample_as_bytes():
    data = write_training_sample_video(fps=6, seed=0)
    assert isinstance(data, bytes) and decompose_video(data).motion_vectors.shape[0] == 1
