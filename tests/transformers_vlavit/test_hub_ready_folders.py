"""Every folder the project writes works as a hub download: only transformers and diffusers installed."""

from __future__ import annotations

from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint


def test_tiny_checkpoint_entry_points_without_the_packages(tmp_path, check_hub_folder):
    check_hub_folder(write_tiny_checkpoint(tmp_path / "tiny"))
