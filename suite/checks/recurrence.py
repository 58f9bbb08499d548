"""Checks of the recurrences (variants/linear/recurrence.py: RetNet, GLA, DeltaNet, Gated DeltaNet,
RWKV-7): the chunked form against the recurrent definition where chunks and sequences do not line up,
and the state a run hands on.

The values, key-lengths, GQA and gradients checks run for these variants as for every other (their
definition is the float64 loop over time); these add what only a chunked recurrence can get wrong.
"""

from __future__ import annotations

import torch

from ...variants.contract import Unsupported, Variant, VariantInfo
from ...variants.gates import make_gates
from .checker import Checker, CheckFailed, fmt
from .registry import check

# Odd lengths, and chunk sizes that divide none of them but 1 (N = 1: a single decoding step).
ODD_LENGTHS = (1, 17, 100, 257)
CHUNK_SIZES = (16, 64)
B, H, H_KV, D = 2, 4, 2, 16


def _recurrent(info: VariantInfo) -> bool:
    return info.recurrent


def _build(c: Checker, chunk_size: int) -> Variant:
    spec_options = c.options | {"chunk_size": chunk_size}
    checker = Checker(c.cls, str(c.device), c.dtype, c.seed, spec_options)
    return checker.build((B, H, H_KV, 1, 1, D), causal=True)


def _inputs(c: Checker, n: int, variant: Variant, salt: int) -> tuple:
    q, k, v = c.inputs((B, H, H_KV, n, n, D), salt=salt)
    return q, k, v, make_gates(variant.info.gates, q, k, seed=salt)


@check("chunk-boundaries", order=65, applies=_recurrent)
def check_chunk_boundaries(c: Checker) -> str:
    """The chunked form equals the recurrent definition at N = 1, 17, 100, 257 with chunks of 16 and 64
    (none divides N), grouped K/V heads; a form right within one chunk but wrong across chunks is named."""
    errors: dict[tuple[int, int], float] = {}
    for chunk in CHUNK_SIZES:
        variant = _build(c, chunk)
        for n in ODD_LENGTHS:
            q, k, v, gates = _inputs(c, n, variant, salt=20)
            with torch.no_grad():
                out = variant(q, k, v, **gates)
                c.check_output(out, q)
                ref = variant.reference(q.double(), k.double(), v.double(), **{g: t.double() for g, t in gates.items()})
            errors[(chunk, n)] = c.error(out, ref)
    bad = {key: err for key, err in errors.items() if not err <= c.tol}
    if bad:
        (chunk, n), worst = max(bad.items(), key=lambda kv: kv[1])
        # Right wherever N fits in one chunk, wrong only where it does not: the bug is at a boundary.
        one_chunk = all(err <= c.tol for (size, m), err in errors.items() if m <= size)
        what = "a chunk boundary is off (right within one chunk, wrong across chunks): " if one_chunk else ""
        raise CheckFailed(f"{what}rel err {fmt(worst)} > tol {fmt(c.tol)} at N={n}, chunk {chunk}")
    worst = max(errors.values())
    return f"max rel err {fmt(worst)} <= {fmt(c.tol)} over N {ODD_LENGTHS} x chunk {CHUNK_SIZES}"


@check("state-carry", order=66, applies=_recurrent)
def check_state_carry(c: Checker) -> str:
    """The final state out equals the definition's; handed in as the initial state of the rest of the
    sequence it gives the same outputs and final state as one pass (how a decoder carries it)."""
    variant = _build(c, CHUNK_SIZES[0])
    n, cut = 100, 37
    q, k, v, gates = _inputs(c, n, variant, salt=21)
    g64 = {g: t.double() for g, t in gates.items()}
    try:
        with torch.no_grad():
            whole, final = variant(q, k, v, return_state=True, **gates)
            _, want_final = variant.reference(q.double(), k.double(), v.double(), return_state=True, **g64)
            before = {g: t[:, :, :cut] for g, t in gates.items()}
            after = {g: t[:, :, cut:] for g, t in gates.items()}
            head, state = variant(q[..., :cut, :], k[..., :cut, :], v[..., :cut, :], return_state=True, **before)
            tail, carried = variant(
                q[..., cut:, :], k[..., cut:, :], v[..., cut:, :], initial_state=state, return_state=True, **after
            )
    except Unsupported as err:
        raise CheckFailed(f"declares a recurrence but takes no state: {err}") from None
    errors = {
        "final state against the definition's": c.error(final, want_final),
        f"outputs after a state carried at {cut} of {n}": c.error(torch.cat([head, tail], dim=2), whole.double()),
        "the carried run's final state": c.error(carried, final.double()),
    }
    worst_label, worst = max(errors.items(), key=lambda kv: kv[1])
    if not worst <= c.tol:
        raise CheckFailed(f"{worst_label}: rel err {fmt(worst)} > tol {fmt(c.tol)}")
    return f"state out, and carried in at {cut} of {n}: max rel err {fmt(worst)} <= {fmt(c.tol)}"


def _decays(info: VariantInfo) -> bool:
    return info.recurrent and any(g.law == "log-decay" for g in info.gates)


@check("gate-order", order=67, applies=_decays)
def check_gate_order(c: Checker) -> str:
    """The decay applies before the token's own update: with every decay gate 0 (keep all) but one token's
    -60 (forget all), that token's output still holds its own write k_t v_t. A form that decays after the
    update loses it (the bug class named)."""
    variant = _build(c, CHUNK_SIZES[0])
    n, t = 9, 4
    q, k, v, gates = _inputs(c, n, variant, salt=22)
    for gate in variant.info.gates:
        if gate.law == "log-decay":
            forget = torch.zeros_like(gates[gate.name])
            forget[:, :, t] = -60.0
            gates[gate.name] = forget
    with torch.no_grad():
        out = variant(q, k, v, **gates).double()
        ref = variant.reference(q.double(), k.double(), v.double(), **{g: x.double() for g, x in gates.items()})
    at_t = c.error(out[:, :, t], ref[:, :, t])
    if at_t <= c.tol:
        return f"a token's own write survives its decay (rel err at the forgetting token {fmt(at_t)})"
    if out[:, :, t].norm() < 1e-3 * ref[:, :, t].norm():
        raise CheckFailed(
            "the decay gate is applied after the update: the forgetting token's own write k_t v_t is decayed "
            "away (its output is 0 where the definition keeps it)"
        )
    raise CheckFailed(f"rel err {fmt(at_t)} > tol {fmt(c.tol)} at the token whose decay gate forgets all")


def _delta(info: VariantInfo) -> bool:
    return info.recurrent and any(g.name == "beta" for g in info.gates)


@check("delta-rule", order=68, applies=_delta)
def check_delta_rule(c: Checker) -> str:
    """A write replaces, at rate beta, what the state reads along its L2-normalised key: token 0 writes v_0
    along k (beta 1), token t writes v_t along the same k at beta 0.5, and a query along k then reads
    (v_0 + v_t) / 2. Keys of norm 3 (so a missing L2 norm shows); every other beta 0, every decay 0. The
    bug classes named: q and k not L2-normalised, beta applied to v but not to the key side."""
    variant = _build(c, CHUNK_SIZES[0])
    n, t = 6, 4
    q, k, v, gates = _inputs(c, n, variant, salt=23)
    groups = H // H_KV
    k = k.clone()
    k[:, :, t] = k[:, :, 0]
    k = 3 * k / k.norm(dim=-1, keepdim=True)
    q = q.clone()
    q[:, :, t] = k[:, :, 0].repeat_interleave(groups, 1)
    for gate in variant.info.gates:
        if gate.name == "beta":
            gates["beta"] = torch.zeros_like(gates["beta"])
            gates["beta"][:, :, 0], gates["beta"][:, :, t] = 1.0, 0.5
        elif gate.law == "log-decay":
            gates[gate.name] = torch.zeros_like(gates[gate.name])
    with torch.no_grad():
        out = variant(q, k, v, **gates)[:, :, t].double()
    scale = variant.scale(D)
    v0, vt = (v[:, :, i].double().repeat_interleave(groups, 1) for i in (0, t))
    readings = {
        "": scale * (v0 + vt) / 2,
        "beta is applied to v but not to the key side (the old reading is replaced whole)": scale * vt / 2,
        "q and k are not L2-normalised": scale * 9 * (v0 + 0.5 * (vt - 9 * v0)),
    }
    errors = {why: c.error(out, want) for why, want in readings.items()}
    if errors[""] <= c.tol:
        return f"reads (v_0 + v_t) / 2 along the key written twice (rel err {fmt(errors[''])})"
    named = [why for why, err in errors.items() if why and err <= c.tol]
    raise CheckFailed(
        named[0] if named else f"rel err {fmt(errors[''])} > tol {fmt(c.tol)} reading the key written twice"
    )
