"""Installs the optional GPU kernels (the `gpu` extra) that publish a wheel for the torch already here.

Each package is installed on its own, from wheels only, under a constraint that pins torch to the
installed version: an xformers built for another torch is refused by pip instead of replacing the
box's torch. What cannot be installed is listed with pip's reason and stays unavailable in `list`
and in every run (its variant says why). Run by `make bench` and `make gpu-check` on a GPU box.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import torch


def gpu_extra() -> list[str]:
    """The requirements of attnbench's `gpu` extra, as installed metadata declares them."""
    requires = metadata.requires("attnbench") or []
    return [r.split(";")[0].strip() for r in requires if re.search(r"""extra\s*==\s*["']gpu["']""", r)]


def pip_command(requirement: str, constraints: Path, python: str = sys.executable) -> list[str]:
    """pip installing `requirement` from a wheel, never changing what `constraints` pins."""
    return [python, "-m", "pip", "install", "-q", "--only-binary=:all:", "-c", str(constraints), requirement]


def torch_pin() -> str:
    """The constraint that keeps torch as installed (local version label included: 2.5.0a0+872d972e41)."""
    return f"torch=={torch.__version__}"


def install_gpu_kernels() -> int:
    """Install each package of the `gpu` extra that has a wheel for this torch; print one line per package."""
    if not torch.cuda.is_available():
        print("no CUDA device: the optional GPU kernels (xformers, flash-attn, fla, sageattention) are not installed")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(torch_pin() + "\n")
        for requirement in gpu_extra():
            done = subprocess.run(pip_command(requirement, constraints), capture_output=True, text=True)
            if done.returncode == 0:
                print(f"{requirement}: installed")
                continue
            lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or ["pip failed"]
            print(f"{requirement}: not installed, no wheel for torch {torch.__version__} here ({lines[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(install_gpu_kernels())
