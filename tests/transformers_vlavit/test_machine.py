"""The one-line machine description that benchmarks print and the shapes recipe records."""

import os

import torch

from transformers_vlavit.machine import cpu_model, describe_machine, gpu_names, usable_cores

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu vme

processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
"""


def test_cpu_model_reads_the_first_model_name(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert cpu_model(path) == "AMD EPYC 7B13 64-Core Processor"


def test_cpu_model_falls_back_to_platform_without_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.setattr("platform.processor", lambda: "")
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert cpu_model(tmp_path / "missing") == "x86_64"


def test_describe_machine_names_cpu_cores_and_gpus(tmp_path, monkeypatch):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert usable_cores() == 3
    assert describe_machine(path) == "AMD EPYC 7B13 64-Core Processor; 8 logical cores (3 usable); no GPU"

    names = {0: "NVIDIA H200", 1: "NVIDIA A100"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: names[index])
    assert gpu_names() == ["NVIDIA H200", "NVIDIA A100"]
    assert describe_machine(path).endswith("; NVIDIA H200, NVIDIA A100")

