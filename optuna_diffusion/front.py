"""The Pareto front a user reads: its rows, the plans worth showing, and the table.

A (FID, MACs) front always holds the cheapest plans, however bad: with nothing spending fewer MACs,
a 3-step plan at FID 800 is on it. So by default the table lists only plans that are no worse than
the worst hand-designed schedule with as many steps (their FIDs are stored on the time-step study,
:data:`~optuna_diffusion.trial_plan.BASELINE_FIDS_ATTR`), or below ``max_fid``, and says how many rows
it hid. The stored trials are never changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna

from .plan import Plan
from .trial_plan import BASELINE_FIDS_ATTR, is_low_fidelity, plan_from_trial


@dataclass(frozen=True)
class FrontRow:
    """One Pareto-optimal trial, for tables."""

    number: int
    fid: float
    macs: float
    plan: Plan


def fully_scored(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial has finite values from a full-size evaluation (not a low-fidelity look)."""
    return trial.values is not None and all(math.isfinite(v) for v in trial.values) and not is_low_fidelity(trial)


def pareto_front(study: optuna.Study) -> list[FrontRow]:
    """The study's Pareto-optimal complete trials with finite values and their plans, by MACs."""
    rows = [
        FrontRow(trial.number, trial.values[0], trial.values[1], plan_from_trial(trial))
        for trial in study.best_trials
        if fully_scored(trial)
    ]
    return sorted(rows, key=lambda row: (row.macs, row.fid))


def baseline_limits(timestep_study: optuna.Study | None) -> dict[int, float]:
    """Per number of steps, the FID of the worst hand-designed schedule (empty when none are stored)."""
    if timestep_study is None:
        return {}
    stored = timestep_study.user_attrs.get(BASELINE_FIDS_ATTR) or {}
    limits = {}
    for steps, fids in stored.items():
        finite = [fid for fid in fids.values() if fid is not None and math.isfinite(fid)]
        if finite:
            limits[int(steps)] = max(finite)
    return limits


def worth_showing(row: FrontRow, limits: dict[int, float], max_fid: float | None) -> bool:
    """Whether a row is no worse than the worst baseline at its K (and at most ``max_fid``)."""
    if max_fid is not None and row.fid > max_fid:
        return False
    limit = limits.get(row.plan.num_steps)
    return limit is None or row.fid <= limit


def shown_row(row: FrontRow, limits: dict[int, float] | None, max_fid: float | None) -> bool:
    """Whether the table lists ``row`` by default (:func:`worth_showing` with no limits when none are stored)."""
    return worth_showing(row, limits or {}, max_fid)


def format_front(
    rows: list[FrontRow], *, limits: dict[int, float] | None = None, max_fid: float | None = None, show_all: bool = False,
    metric: str = "FID", rescored: tuple[str, dict[str, float | None]] | None = None,
) -> str:
    """The front as a text table (steps, MACs, value, plan), hiding rows not worth showing unless ``show_all``.

    ``metric`` names the value column (the study's fitness); ``rescored``, ``(label, {trial number:
    value})``, adds a column of the front re-scored with another metric (``-`` where a row has none).
    """
    shown = rows if show_all else [row for row in rows if shown_row(row, limits, max_fid)]
    extra = f" {rescored[0]:>12}" if rescored else ""
    lines = [f"{'trial':>6} {'steps':>5} {'GMACs':>9} {metric:>8}{extra}  plan"]
    for row in shown:
        if rescored:
            value = rescored[1].get(str(row.number))
            extra = f" {value:12.3f}" if value is not None else f" {'-':>12}"
        lines.append(f"{row.number:>6} {row.plan.num_steps:>5} {row.macs / 1e9:9.4f} {row.fid:8.3f}{extra}  {row.plan}")
    hidden = len(rows) - len(shown)
    if hidden:
        reason = "worse than every hand-designed schedule with as many steps"
        if max_fid is not None:
            reason += f" or above FID {max_fid:g}"
        lines.append(f"({hidden} front rows hidden: {reason}; --all shows them)")
    return "\n".join(lines)
