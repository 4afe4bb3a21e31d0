"""One line naming the machine a figure was measured on: CPU model, cores, and the GPUs torch can see.

Benchmarks print it and the Video-LaVIT-Shapes recipe records it beside its stage times, so every timing the
project reports says where it came from. Library versions and load are the caller's to add: they differ by
benchmark.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux `/proc/cpuinfo`), else what `platform` reports, else ``"unknown CPU"``."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform has one, else all logical cores)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gpu_names() -> list[str]:
    """Names of the CUDA devices torch sees (empty without torch, without CUDA or without a device)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]


def describe_machine(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """``"<CPU model>; <n> logical cores (<m> usable); <GPU names or 'no GPU'>"``."""
    gpus = gpu_names()
    return (
        f"{cpu_model(cpuinfo)}; {os.cpu_count()} logical cores ({usable_cores()} usable); "
        f"{', '.join(gpus) if gpus else 'no GPU'}"
    )


__all__ = ["cpu_model", "describe_machine", "gpu_names", "usable_cores"]
