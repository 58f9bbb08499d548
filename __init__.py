"""attnbench: attention variants on one harness, measured for speed, memory and accuracy."""

__version__ = "0.1.0"
