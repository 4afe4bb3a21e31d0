"""The plain-torch I3D: TF "SAME" padding, the released layer names and shapes, loading by shape."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transformers_vlavit.evaluation.i3d import I3DWeightsError, InceptionI3d, Unit3D, load_i3d, same_padding


def test_same_padding_is_tensorflow_s():
    # TF: output = ceil(in / stride); total pad = max((out - 1) * stride + k - in, 0), extra on the end
    for length in (7, 8, 16, 224, 15):
        for kernel, stride in ((7, 2), (3, 1), (3, 2), (2, 2), (1, 1)):
            pads = same_padding((length,), (kernel,), (stride,))
            out = -(-length // stride)
            total = max((out - 1) * stride + kernel - length, 0)
            assert pads == [total // 2, total - total // 2]
    assert same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]


def test_unit3d_equals_a_padded_convolution_then_eval_batch_norm():
    torch.manual_seed(0)
    unit = Unit3D(3, 5, kernel=(3, 3, 3), stride=(2, 2, 2)).eval()
    unit.bn.running_mean.uniform_(-1, 1)
    unit.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 5, 9, 8)
    padded = F.pad(x, [0, 1, 1, 1, 1, 1])  # W 8 -> pad 1 (end), H 9 -> 2, T 5 -> 2
    convolved = F.conv3d(padded, unit.conv3d.weight, stride=2)
    bn = unit.bn
    normalised = (convolved - bn.running_mean.view(1, -1, 1, 1, 1)) / torch.sqrt(
        bn.running_var.view(1, -1, 1, 1, 1) + 1e-3
    )
    expected = F.relu(normalised * bn.weight.view(1, -1, 1, 1, 1) + bn.bias.view(1, -1, 1, 1, 1))
    torch.testing.assert_close(unit(x), expected)


def test_released_network_has_the_pytorch_i3d_names_and_shapes():
    state = InceptionI3d().state_dict()
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["Mixed_3b.b1b.conv3d.weight"].shape == (128, 96, 3, 3, 3)
    assert state["Mixed_5c.b3b.conv3d.weight"].shape == (128, 832, 1, 1, 1)
    assert state["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)
    assert "logits.conv3d.bias" in state and "Conv3d_1a_7x7.conv3d.bias" not in state
    assert "Mixed_4f.b2b.bn.running_var" in state


def test_tiny_weights_load_with_their_widths_and_give_the_saved_network_s_logits(tiny_i3d, tmp_path):
    model = load_i3d(tiny_i3d)
    assert not model.training
    assert model.Conv3d_1a_7x7.conv3d.out_channels == 4 and model.Mixed_5c.out_channels == 10
    blocks = tuple((name, (2, 2, 4, 2, 2, 2)) for name in model.block_names)  # the conftest's tiny widths
    reference = InceptionI3d(stem_channels=(4, 4, 8), blocks=blocks, num_classes=12)
    reference.load_state_dict(torch.load(tiny_i3d, weights_only=True))
    videos = torch.rand(2, 3, 16, 224, 224) * 2 - 1
    with torch.no_grad():
        logits = model(videos)
        assert logits.shape == (2, 12)
        torch.testing.assert_close(logits, reference.eval()(videos))
        # each video's features do not depend on the other videos in the batch
        torch.testing.assert_close(model(videos[1:]), logits[1:], atol=1e-5, rtol=1e-4)
    not_i3d = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(1)}, not_i3d)
    with pytest.raises(I3DWeightsError, match="Conv3d_1a_7x7"):
        load_i3d(not_i3d)
    with pytest.raises(FileNotFoundError):
        load_i3d(tmp_path / "missing.pt")


def test_longer_clips_average_the_logits_over_the_remaining_time_steps(tiny_i3d):
    model = load_i3d(tiny_i3d)
    captured = {}
    model.logits.register_forward_hook(lambda module, inputs, output: captured.update(logits=output))
    with torch.no_grad():
        features = model(torch.rand(1, 3, 32, 224, 224) * 2 - 1)
    per_step = captured["logits"]
    assert per_step.shape[2] == 3  # 32 frames leave 4 time steps, the 2 x 7 x 7 average pool 3
    torch.testing.assert_close(features, per_step.mean(dim=(2, 3, 4)))
