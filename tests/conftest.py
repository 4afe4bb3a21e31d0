"""Shared fixtures: the golden reference folder and small helpers every test module may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tiny models on a 2-core machine run fastest single-threaded; subprocesses (CLI, accelerate launch)
# inherit the environment variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch = pytest.importorskip("torch")
torch.set_num_threads(1)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def golden_path() -> Path:
    """Folder of the original implementation's reference outputs (``$VLAVIT_GOLDEN_DIR``)."""
    return Path(os.environ.get("VLAVIT_GOLDEN_DIR", PROJECT_ROOT.parent / "shared" / "golden"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The golden folder; skips the requesting test with the reason when it is missing."""
    path = golden_path()
    if not path.is_dir():
        pytest.skip(f"golden reference folder not found at {path} (set VLAVIT_GOLDEN_DIR)")
    return path


@pytest.fixture(scope="session")
def golden_file(golden_dir):
    """Return a loader ``name -> (tensors, description)`` for ``<golden>/<name>.safetensors``."""
    import json

    from safetensors import safe_open

    def load(name: str):
        path = golden_dir / f"{name}.safetensors"
        if not path.is_file():
            pytest.skip(f"golden file {path} is missing")
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            metadata = handle.metadata() or {}
        return tensors, json.loads(metadata.get("description", "{}"))

    return load
