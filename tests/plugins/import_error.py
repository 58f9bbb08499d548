"""Broken on purpose: fails while being imported."""

import attnbench_no_such_module  # noqa: F401
