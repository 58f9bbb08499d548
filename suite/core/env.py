"""The environment a run was made in: device, driver, versions, CPU, threads, commit, date, command."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

# Distributions whose versions change attention numbers.
PACKAGES = ("torch", "triton", "flash-attn", "flash-attn-3", "xformers", "flash-linear-attention", "numpy")


def package_version(dist: str) -> str | None:
    """The installed version of distribution `dist`, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo), or the platform's description."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> dict[str, Any]:
    """Commit of the attnbench checkout (and whether its code had uncommitted changes), if it is one.

    results/ is data, not code: a run replaced there (remeasured into the folder it keeps) leaves the
    code at the commit as clean as it was."""
    root = Path(__file__).resolve().parents[2]  # suite/core/env.py -> the checkout

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    code_changes = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"commit": commit, "dirty": bool(code_changes)}


def provenance() -> dict[str, Any]:
    """What every record names of the code and machine that made it: commit, versions, host."""
    return {
        "code": git_commit() | {"version": package_version("attnbench")},
        "versions": {name: package_version(name) for name in PACKAGES},
        "host": platform.node(),
    }


def device_name(device: str) -> str:
    """The GPU's name on CUDA, the CPU model elsewhere."""
    return torch.cuda.get_device_name(0) if device == "cuda" else cpu_model()


def device_info(device: str) -> dict[str, Any]:
    """Name and, for CUDA, driver, capability and memory of the device."""
    if device != "cuda":
        return {"device": "cpu", "device_name": device_name(device)}
    props = torch.cuda.get_device_properties(0)
    driver = None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "device": "cuda",
        "device_name": device_name(device),
        "driver": driver,
        "capability": f"{props.major}.{props.minor}",
        "memory_bytes": props.total_memory,
        "multiprocessors": props.multi_processor_count,
    }


def capture(device: str, threads: int | None, argv: list[str] | None = None) -> dict[str, Any]:
    """Everything env.json records about this machine and invocation."""
    return {
        **device_info(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "versions": {name: package_version(name) for name in PACKAGES},
        **git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(argv if argv is not None else ["attnbench", *sys.argv[1:]]),
    }
