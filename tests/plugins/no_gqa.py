"""Naive attention that declares no grouped K/V heads: a GQA, MQA model must be refused with one line."""

from dataclasses import replace

from attnbench.variants.exact.naive import NaiveAttention


class NoGqa(NaiveAttention):
    info = replace(NaiveAttention.info, name="no-gqa", gqa=False)
