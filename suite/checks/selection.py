"""Checks of the variants that choose their keys from the content (NSA, MoBA, DSA: ``info.selects``) and of
the output gate (gated attention's): bugs that a variant's own definition can share with its fast form.

- selection-future: the keys after a query made as attractive to the selection as they can be (the
  queries share a direction; the future keys, and the future indexer keys, point along it). A
  selection that can choose a block or token ahead of the query then changes the outputs of earlier
  queries; a causal one cannot.
- output-gate: sigmoid(g) times the ungated output (the same call with the gate wide open), per
  query token: a gate applied before the softmax, or to the queries, is not that.
"""

from __future__ import annotations

import torch

from ...variants.contract import OUTPUT_GATE, Unsupported, VariantInfo, attend
from ...variants.gates import make_gates
from .checker import Checker, CheckFailed, Skipped, fmt, shape_label
from .registry import check

# Long enough for a share of the blocks to hold more than the forced ones (32 blocks of 64).
SELECTION_SHAPE = (1, 4, 2, 2048, 2048, 16)
GATE_SHAPES = ((1, 4, 2, 40, 40, 16), (2, 2, 2, 17, 45, 16))
OPEN = 30.0  # a gate logit whose sigmoid is 1 to float precision


def _selects(info: VariantInfo) -> bool:
    return info.selects


def _output_gated(info: VariantInfo) -> bool:
    return any(g.name == OUTPUT_GATE for g in info.gates)


@check("selection-future", order=55, applies=_selects)
def check_selection_future(c: Checker) -> str:
    """Future keys made attractive to the selection leave every earlier output as it was."""
    if not c.info.causal:
        raise Skipped("declares no causal support")
    shape = SELECTION_SHAPE
    _, _, _, nq, nk, d = shape
    variant = c.build(shape, causal=True)
    q, k, v = c.inputs(shape, salt=5)
    toward = torch.full((d,), 1.0, device=c.device, dtype=c.dtype)  # the queries' shared direction
    q = q + 2 * toward
    gates = make_gates(variant.info.gates, q, k, seed=5)
    for gate in variant.info.gates:
        if gate.queries and gate.per_channel:  # an indexer's queries share the direction too
            gates[gate.name] = gates[gate.name] + 2 * toward
        elif gate.queries and gate.law == "normal":  # head weights positive: a higher score ranks higher
            gates[gate.name] = gates[gate.name].abs()
    t = nq // 2  # queries 0..t; keys after t + (nk - nq) are their future
    future = t + (nk - nq) + 1
    _, k2, v2 = c.inputs(shape, salt=15)
    k2[:, :, :future], v2[:, :, :future] = k[:, :, :future], v[:, :, :future]
    k2[:, :, future:] = 8 * toward
    lured = dict(gates)
    for gate in variant.info.gates:
        if not gate.queries and gate.per_channel:  # an indexer's keys, after t, along the direction
            lured[gate.name] = gates[gate.name].clone()
            lured[gate.name][:, :, future:] = 8 * toward
    with torch.no_grad():
        try:
            before = attend(variant, q, k, v, gates=gates)
            after = attend(variant, q, k2, v2, gates=lured)
        except Unsupported as why:
            raise Skipped(str(why)) from None
    c.check_output(after, q)
    change = c.error(after[:, :, : t + 1], before[:, :, : t + 1].double())
    if not change <= c.tol:
        raise CheckFailed(
            f"{shape_label(shape, True)}: the selection can pick a future block or token: outputs of queries 0..{t} "
            f"changed (rel {fmt(change)}) when only keys >= {future} changed, made attractive to it"
        )
    return f"keys >= {future} made attractive left queries 0..{t} unchanged at {shape_label(shape, True)}"


@check("output-gate", order=57, applies=_output_gated)
def check_output_gate(c: Checker) -> str:
    """The output is sigmoid(gate) times the output with the gate wide open: a gate after attention."""
    errors: dict[str, float] = {}
    for causal in c.modes():
        for shape in GATE_SHAPES:
            try:
                variant = c.build(shape, causal)
            except Unsupported:
                continue
            q, k, v = c.inputs(shape, salt=6)
            gates = make_gates(variant.info.gates, q, k, seed=6)
            opened = dict(gates) | {OUTPUT_GATE: torch.full_like(gates[OUTPUT_GATE], OPEN)}
            with torch.no_grad():
                out = attend(variant, q, k, v, gates=gates)
                ungated = attend(variant, q, k, v, gates=opened)
            c.check_output(out, q)
            g = gates[OUTPUT_GATE].double()
            want = ungated.double() * torch.sigmoid(g if g.dim() == 4 else g[..., None])
            errors[shape_label(shape, causal)] = c.error(out, want)
    if not errors:
        raise Skipped("no input is supported")
    worst_label, worst = max(errors.items(), key=lambda kv: kv[1])
    if not worst <= c.tol:
        raise CheckFailed(
            f"the output is not sigmoid(gate) times the ungated output (rel {fmt(worst)} at {worst_label}): "
            "a gate applied before the softmax, or not after attention"
        )
    return f"sigmoid(gate) x ungated output within {fmt(worst)} over {len(errors)} inputs"
