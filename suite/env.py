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

from attnbench.suite.errors import UserError

# Distributions whose versions change attention numbers.
PACKAGES = ("torch", "triton", "flash-attn", "flash-attn-3", "xformers", "flash-linear-attention", "numpy")


def _version(dist: str) -> str | None:
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
    """Commit of the attnbench checkout (and whether it had uncommitted changes), if it is one."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return {
        "commit": commit,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
    }


def device_info(device: str) -> dict[str, Any]:
    """Name and, for CUDA, driver, capability and memory of the device."""
    if device != "cuda":
        return {"device": "cpu", "device_name": cpu_model()}
    props = torch.cuda.get_device_properties(0)
    driver = None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "device": "cuda",
        "device_name": props.name,
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
        "versions": {name: _version(name) for name in PACKAGES},
        **git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(argv if argv is not None else ["attnbench", *sys.argv[1:]]),
    }


# What makes two runs' numbers comparable: the same machine and the same torch.
MACHINE_FIELDS = ("hostname", "device", "device_name", "cpu_count")


def machine_mismatch(recorded: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Why a run folder recorded as `recorded` must not be extended from `now` (None: it may)."""
    differences = [
        f"{field} {recorded.get(field)!r} here {now.get(field)!r}"
        for field in MACHINE_FIELDS
        if field in recorded and recorded.get(field) != now.get(field)
    ]
    before, after = recorded.get("versions", {}).get("torch"), now.get("versions", {}).get("torch")
    if before and before != after:
        differences.append(f"torch {before!r} here {after!r}")
    return ", ".join(differences) or None


def require_same_machine(run_dir: Path, recorded: dict[str, Any], now: dict[str, Any]) -> None:
    """A one-line error when `run_dir`, whose env.json is `recorded`, holds another machine's numbers."""
    if recorded and (mismatch := machine_mismatch(recorded, now)) is not None:
        raise UserError(f"{run_dir} holds runs from another machine ({mismatch}): choose another --out")
