"""ListOps: evaluate a nested list expression; 10 classes (its value, 0-9).

Nangia & Bowman 2018; the long version is Long Range Arena's (Tay et al. 2020): operators
``[MIN``, ``[MAX``, ``[MED`` (median, rounded down) and ``[SM`` (sum mod 10) over digits, nested up to
depth 10 with up to 10 arguments, 500 to 2000 symbols, e.g.

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]   ->   5

The release files (``basic_{train,val,test}.tsv``) are tab-separated with a ``Source`` / ``Target``
header, sources in LRA's parenthesised tree syntax: ``( ( ( [MAX 4 ) 3 ) ] )``. Tokens are the
symbols; parentheses carry no information and are dropped. The closing bracket ``]`` is kept: the
original LRA pipeline's tokenizer removed every non-alphanumeric character, brackets included,
which makes the nesting unrecoverable and is a known cause of low ListOps scores.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import FIRST_SYMBOL, DataFormatError, ReleaseParams, Split, Task, TaskData, lra_root, pad_sequences

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
# [FIRST and [LAST exist in the original generator (disabled in LRA's); the loader accepts them.
SYMBOLS = (*OPERATORS, "[FIRST", "[LAST", "]", *(str(d) for d in range(10)))
DIGITS = tuple(str(d) for d in range(10))
VOCAB = {symbol: FIRST_SYMBOL + i for i, symbol in enumerate(SYMBOLS)}
OPERATOR_PROBABILITY = 0.25  # chance that a node above max depth is an operator, as in LRA's generator


class ListOpsParams(BaseModel):
    """Generator parameters; the defaults are LRA's."""

    model_config = ConfigDict(extra="forbid")

    max_depth: int = Field(10, gt=0)
    max_args: int = Field(10, ge=2)
    min_length: int = Field(500, ge=1, description="symbols, parentheses excluded")
    max_length: int = Field(2000, ge=1)
    train_size: int = Field(96000, gt=0)
    val_size: int = Field(2000, gt=0)
    test_size: int = Field(2000, gt=0)

    @model_validator(mode="after")
    def _lengths(self) -> ListOpsParams:
        if self.min_length >= self.max_length:
            raise ValueError(f"min_length ({self.min_length}) must be below max_length ({self.max_length})")
        return self


def evaluate(op: str, args: list[int]) -> int:
    """The value of one operator applied to its (already evaluated) arguments."""
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        return int(statistics.median(args))
    if op == "[SM":
        return sum(args) % 10
    if op == "[FIRST":
        return args[0]
    if op == "[LAST":
        return args[-1]
    raise ValueError(f"unknown operator {op}")


def random_tree(rng: random.Random, depth: int, params: ListOpsParams) -> tuple[list[str], int]:
    """A random expression as (symbols, value): LRA's recursive generator."""
    if depth >= params.max_depth or rng.random() >= OPERATOR_PROBABILITY:
        digit = rng.randrange(10)
        return [str(digit)], digit
    op = rng.choice(OPERATORS)
    symbols, values = [op], []
    for _ in range(rng.randint(2, params.max_args)):
        sub_symbols, sub_value = random_tree(rng, depth + 1, params)
        symbols += sub_symbols
        values.append(sub_value)
    return [*symbols, "]"], evaluate(op, values)


def parse(symbols: list[str]) -> int:
    """Evaluate a symbol sequence (the inverse check of the generator and of the files)."""
    stack: list[list] = []
    values: list[int] = []  # the finished top-level values: a well-formed source has exactly one
    for symbol in symbols:
        if symbol in OPERATORS or symbol in ("[FIRST", "[LAST"):
            stack.append([symbol])
            continue
        if symbol == "]":
            if not stack:
                raise ValueError("a ']' closes no operator")
            op, *args = stack.pop()
            if not args:
                raise ValueError(f"{op} has no arguments")
            value = evaluate(op, args)
        else:
            value = int(symbol)
        (stack[-1] if stack else values).append(value)
    if stack:
        raise ValueError(f"{len(stack)} operator(s) never closed")
    if len(values) != 1:
        raise ValueError(f"{len(values)} top-level values, not one expression")
    return values[0]


def source_symbols(source: str) -> list[str]:
    """The symbols of an LRA source string: parentheses dropped, brackets kept."""
    return source.replace("(", " ").replace(")", " ").split()


def generate(params: ListOpsParams, seed: int) -> TaskData:
    """Distinct random expressions with min_length < length < max_length, split train/val/test."""
    rng = random.Random(seed)
    total = params.train_size + params.val_size + params.test_size
    seen: dict[tuple[str, ...], int] = {}
    while len(seen) < total:
        symbols, value = random_tree(rng, 1, params)
        if params.min_length < len(symbols) < params.max_length:
            seen.setdefault(tuple(symbols), value)
    items = list(seen.items())
    rng.shuffle(items)
    tokens = pad_sequences([[VOCAB[s] for s in symbols] for symbols, _ in items], params.max_length)
    labels = torch.tensor([value for _, value in items])
    a, b = params.train_size, params.train_size + params.val_size
    return TaskData(
        name="listops",
        kind="classify",
        train=Split(tokens[:a], labels[:a]),
        val=Split(tokens[a:b], labels[a:b]),
        test=Split(tokens[b:], labels[b:]),
        vocab_size=FIRST_SYMBOL + len(SYMBOLS),
        num_classes=10,
        max_len=params.max_length,
        description=f"ListOps, depth <= {params.max_depth}, {params.min_length}-{params.max_length} symbols",
        params=params.model_dump(),
    )


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, tab-separated fields) of each line; no quoting (a stray quote is data, not a field) and
    no length limit; a line that is not UTF-8 is named."""
    with open(path, "rb") as f:
        for line, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DataFormatError(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start})") from None
            yield line, text.split("\t") if text else []


def read_tsv(path: Path, max_len: int) -> Split:
    """One LRA ListOps release file: header Source<TAB>Target, then one expression per line.

    Each expression is evaluated and must give its target. Expressions longer than `max_len`
    symbols are left out (cutting one would change its value) and counted in `Split.skipped`.
    """
    if not path.is_file():
        raise DataFormatError(f"missing ListOps file {path}")
    sequences, labels, too_long = [], [], 0
    for line, row in _tsv_rows(path):
        if line == 1:
            if row != ["Source", "Target"]:
                raise DataFormatError(f"{path}:1: expected the header 'Source<TAB>Target', got {row!r}")
            continue
        if len(row) != 2:
            raise DataFormatError(f"{path}:{line}: expected 2 tab-separated fields, got {len(row)}")
        source, target = row
        symbols = source_symbols(source)
        unknown = {s for s in symbols if s not in VOCAB}
        if unknown:
            raise DataFormatError(f"{path}:{line}: unknown ListOps symbol {sorted(unknown)[0]!r}")
        if target.strip() not in DIGITS:  # not isdigit(): it accepts '²', which int() refuses
            raise DataFormatError(f"{path}:{line}: target must be a digit 0-9, got {target!r}")
        try:
            value = parse(symbols)
        except ValueError as err:
            raise DataFormatError(f"{path}:{line}: not a well-formed expression ({err})") from None
        if value != int(target):
            raise DataFormatError(f"{path}:{line}: the expression evaluates to {value}, the target says {target}")
        if len(symbols) > max_len:
            too_long += 1
            continue
        sequences.append([VOCAB[s] for s in symbols])
        labels.append(int(target))
    if not labels:
        raise DataFormatError(
            f"{path}: no examples" + (f" of at most {max_len} symbols ({too_long} longer)" if too_long else "")
        )
    return Split(pad_sequences(sequences, max_len), torch.tensor(labels), skipped=too_long)


def load_release(root: Path, max_len: int = 2000) -> TaskData:
    """The LRA release's listops-1000 folder: basic_train.tsv, basic_val.tsv, basic_test.tsv."""
    folder = root / "listops-1000"
    splits = {name: read_tsv(folder / f"basic_{name}.tsv", max_len) for name in ("train", "val", "test")}
    return TaskData(
        name="listops",
        kind="classify",
        **splits,
        vocab_size=FIRST_SYMBOL + len(SYMBOLS),
        num_classes=10,
        max_len=max_len,
        description=f"ListOps, LRA release ({folder}), expressions of at most {max_len} symbols"
        + (f" ({skipped} longer left out)" if (skipped := sum(s.skipped for s in splits.values())) else ""),
        params={"data": str(folder), "max_len": max_len},
    )


def read(root: Path, release: ReleaseParams, params: dict) -> TaskData:
    """The release under --data-dir; a preset's generator length bounds its expressions too (longer ones are
    left out)."""
    return load_release(lra_root(root), release.max_len or params.get("max_length") or 2000)


def at_length(params: dict[str, Any], n: int) -> dict[str, Any]:
    """`params` with expressions of at most n symbols, the shortest grown in proportion (LRA: 500 to 2000).
    Depth and arity stay: long expressions need LRA's (10 and 10); at depth 6 and 5 arguments, trees past
    about 300 symbols are too rare to draw thousands of."""
    base = ListOpsParams.model_fields
    low, high = (
        params.get("min_length", base["min_length"].default),
        params.get("max_length", base["max_length"].default),
    )
    return {**params, "max_length": n, "min_length": max(1, round(low * n / high))}


TASK = Task("listops", "nested list expressions, 10 classes", ListOpsParams, generate, read, at_length=at_length)
