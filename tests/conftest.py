"""Shared test setup: GPU tests skip themselves with the reason where no CUDA device is visible."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

PLUGINS = Path(__file__).parent / "plugins"
ROOT = Path(__file__).parent.parent


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; torch.cuda.is_available() is False here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def plugins() -> Path:
    """Folder of deliberately broken (and one correct) plugin files."""
    return PLUGINS
