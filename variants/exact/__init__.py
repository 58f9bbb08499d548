"""Exact attention: every variant here must equal softmax attention (naive.py) within its tolerance."""
