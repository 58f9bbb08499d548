"""The text of `attnbench bench --dry-run`: the plan of a run, before anything is measured."""

from __future__ import annotations

import pandas as pd

from ..runs.plan import COMPILE_S, STARTUP_S, Device, PlannedPoint


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def plan_text(planned: list[PlannedPoint], device: Device, recorded_keys: set, budget_s: float | None) -> str:
    """Points, availability with reasons, predicted out-of-memory points and the wall-time estimate (of the points
    not yet recorded: a resumed run skips the others)."""
    lines = []
    where = "here" if device.here else "not on this machine: planned for it"
    peaks = ", ".join(f"{d} {t:.3g}" for d, t in sorted(device.tflops.items()))
    lines.append(
        f"device: {device.kind}, {device.name} ({where}); memory {_gib(device.memory)}; "
        f"matmul TFLOP/s {peaks}; bandwidth {device.bandwidth_gbs:.0f} GB/s"
        f"{'' if device.here else ' (assumed)'}"
    )
    variants = list(dict.fromkeys(p.point.variant for p in planned))
    recorded = sum(p.point.key() in recorded_keys for p in planned)
    resumed = f"; {recorded} already recorded in the run folder (skipped on resume)" if recorded else ""
    lines.append(f"{len(planned)} points, {len(variants)} variants{resumed}")
    reasons: dict[str, set[str]] = {}
    for p in planned:
        if p.unavailable:
            reasons.setdefault(p.point.variant, set()).add(p.unavailable)
    available = [v for v in variants if v not in reasons]
    known = "here" if device.here else "as far as this machine can tell (declared devices, packages)"
    lines.append(f"available {known} ({len(available)}): {', '.join(available) or 'none'}")
    if reasons:
        lines.append(f"unavailable here ({len(reasons)}):")
        lines += [f"  {name:<16} {'; '.join(sorted(why))}" for name, why in reasons.items()]
    oom = [p for p in planned if p.peak_bytes > device.memory]
    lines.append(f"predicted out of memory (> {_gib(device.memory)}): {len(oom)} points")
    lines += [f"  {p.point.label():<64} ~{_gib(p.peak_bytes)}" for p in oom]
    todo = [p for p in planned if p.point.key() not in recorded_keys]
    frame = pd.DataFrame(
        {"variant": [p.point.variant for p in todo], "points": 1, "minutes": [p.seconds / 60 for p in todo]}
    )
    per_variant = frame.groupby("variant", sort=False).sum().round(1)
    total = sum(p.seconds for p in todo)
    lines.append(
        f"estimated wall time: {_duration(total)}{' for the points not yet recorded' if recorded else ''} "
        f"(worker start {STARTUP_S[device.kind]:.1f} s per point, "
        f"compile {COMPILE_S[device.kind]:.0f} s where a variant compiles, calls at half the matmul peak "
        "or half the bandwidth, "
        "float64 reference; analytic, see suite/runs/plan.py)"
    )
    if budget_s is not None:
        lines.append(
            f"budget: {_duration(budget_s)}; the most informative points run first, the rest are "
            "skipped and recorded in env.json"
        )
    lines.append(per_variant.to_markdown())
    return "\n".join(lines)
