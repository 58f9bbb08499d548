"""Device and dtype names as the CLI and configs spell them, and which main job this host runs."""

from __future__ import annotations

import shutil
import subprocess

import torch

from .errors import UserError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
    "fp64": torch.float64,
}


def parse_dtype(name: str) -> torch.dtype:
    """torch dtype from a name such as 'bf16' or 'float32'."""
    try:
        return DTYPES[name.strip().lower()]
    except KeyError:
        raise UserError(f"unknown dtype {name!r} (one of {', '.join(DTYPES)})") from None


def dtype_name(dtype: torch.dtype) -> str:
    """Canonical short name: float32, float16, bfloat16, float64."""
    return str(dtype).removeprefix("torch.")


def default_device() -> str:
    """cuda when a GPU is visible, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str | None) -> str:
    """Validate a device name against what this machine has."""
    device = (name or default_device()).lower()
    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r} (cpu or cuda)")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device here")
    return device


def device_slug(device: str) -> str:
    """The device as a run folder names it: cpu, or the GPU's model in lower case (h100-80gb-hbm3)."""
    if device == "cpu":
        return "cpu"
    return "-".join(torch.cuda.get_device_name(0).lower().replace("nvidia", "").split()) or "cuda"


def listed_nvidia_gpus(timeout: float = 10.0) -> list[str]:
    """The GPUs `nvidia-smi -L` lists ("GPU 0: NVIDIA H100 ..." lines); none without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        done = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.startswith("GPU ")]


def host_preset() -> str:
    """The main job's bench preset here: `gpu` where torch sees a CUDA device, `cpu` on a machine with no
    GPU. A GPU that nvidia-smi lists but torch cannot use is refused: the cpu preset there would pass for
    the box's numbers."""
    if torch.cuda.is_available():
        return "gpu"
    gpus = listed_nvidia_gpus()
    if gpus:
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise UserError(
            f"nvidia-smi lists {len(gpus)} GPU(s) ({gpus[0]}) but torch {torch.__version__} ({build}) sees none: "
            "install a torch for this driver, or measure the CPU with --preset cpu"
        )
    return "cpu"
