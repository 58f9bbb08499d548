"""Naive attention that declares no key lengths: a padded task model attends its padding, and says so."""

from dataclasses import replace

from attnbench.variants.exact.naive import NaiveAttention


class NoLengths(NaiveAttention):
    info = replace(NaiveAttention.info, name="no-lengths", lengths=False, packed=False)
