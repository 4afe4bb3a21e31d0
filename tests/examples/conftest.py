"""Fixtures for the tests of the data-preparation scripts (``datasets/``) and training examples (``examples/``).

The scripts are run as their users run them, in a subprocess, with the Hugging Face caches pointed into the
test's temporary folder and the hub switched off. (The folders are no packages, so helpers are fixtures.)
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ScriptTools:
    """Paths of the script folders and helpers to run or import the scripts."""

    root = PROJECT_ROOT
    examples = PROJECT_ROOT / "examples"
    data_scripts = PROJECT_ROOT / "datasets"
    python = sys.executable

    @staticmethod
    def env(cache_dir: Path) -> dict[str, str]:
        """Environment of a script run: private caches, no hub (``OMP_NUM_THREADS`` comes from tests/conftest.py)."""
        env = dict(os.environ)
        env.update(
            HF_HOME=str(cache_dir / "hf"),
            HF_DATASETS_CACHE=str(cache_dir / "datasets"),
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        return env

    def run(
        self, command: list, cache_dir: Path, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Run ``command`` from the project root; fail the test with its output unless it exits with 0 in time.

        ``env`` overrides variables of :meth:`env`. The command runs in its own process group, killed as a whole
        on timeout, so that worker processes of a hung run do not outlive the test.
        """
        command = [str(part) for part in command]
        process = subprocess.Popen(
            command, cwd=self.root, env={**self.env(cache_dir), **(env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"{' '.join(command)} did not finish in {timeout} s:\n{stdout[-4000:]}\n{stderr[-6000:]}")
        result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        if result.returncode != 0:
            pytest.fail(
                f"{' '.join(command)} exited with {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
            )
        return result

    @staticmethod
    def free_port() -> int:
        """A TCP port nobody listens on now (rendezvous of a multi-process launch; other runs may share the host)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    @staticmethod
    def load(path: Path):
        """Import a plain script as a module, its folder on ``sys.path`` as when it runs (sibling imports)."""
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


@pytest.fixture(scope="session")
def scripts() -> ScriptTools:
    """Helpers to run and import the scripts of ``datasets/`` and ``examples/``."""
    return ScriptTools()
