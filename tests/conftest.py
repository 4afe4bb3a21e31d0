"""Shared fixtures: the golden reference folder and small helpers every test module may use."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
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


PROJECT_PACKAGES = ("transformers_vlavit", "diffusers_vlavit")

# Prepended to the scripts of `run_without_project`: any import of our packages fails in that
# interpreter, so only code that save_pretrained copied next to the weights can run. The scripts may
# use `BLOCKED` (the blocked package names).
_BLOCK_PROJECT_IMPORTS = textwrap.dedent(
    f"""
    import importlib.abc
    import sys

    BLOCKED = {PROJECT_PACKAGES!r}


    class BlockProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked: remote code must not need it")
            return None


    sys.meta_path.insert(0, BlockProject())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    """
)


@pytest.fixture(scope="session")
def run_without_project():
    """Run ``(script, *args)`` in a fresh Python where our packages cannot be imported.

    Returns the ``subprocess.CompletedProcess`` (text stdout/stderr); the script gets ``args`` as
    ``sys.argv[1:]``.
    """

    def run(script: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
        code = _BLOCK_PROJECT_IMPORTS + textwrap.dedent(script)
        command = [sys.executable, "-c", code, *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    return run


@pytest.fixture(scope="session")
def imports_project():
    """``source text -> bool``: whether Python source imports one of our packages."""
    pattern = re.compile(rf"^\s*(from|import)\s+({'|'.join(PROJECT_PACKAGES)})\b", re.MULTILINE)
    return lambda source: bool(pattern.search(source))
