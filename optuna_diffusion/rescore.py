"""Re-score a finished stage's Pareto front with a second, costlier metric (``[fitness] rescore``).

A search run on a cheap metric (a teacher distance) ends with a front in that metric's units; the plans a
user would pick from are then scored again with the metric that matters (FID, or CLIP score), on
``rescore_samples`` samples. A finished trial's attributes cannot change in Optuna, so the values are
kept on the stage study, by trial number (:data:`~optuna_diffusion.trial_plan.RESCORE_ATTR`), written after
each plan: an interrupted re-scoring resumes where it stopped. ``show`` prints them as a column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from .evaluation import PlanEvaluator
from .front import baseline_limits, pareto_front, shown_row
from .trial_plan import RESCORE_ATTR


def rescore_front(
    study: optuna.Study,
    evaluator: PlanEvaluator,
    *,
    num_samples: int,
    timestep_study: optuna.Study | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, float | None]:
    """Values of ``evaluator.rescore_fitness`` for the front rows the table shows, stored on ``study``.

    Rows already re-scored with the same metric and sample count are read back, not evaluated again.
    Returns ``{trial number: value}`` (None: the plan failed, e.g. NaN samples).
    """
    meter = evaluator.rescore_fitness
    if meter is None:
        return {}
    stored = study.user_attrs.get(RESCORE_ATTR) or {}
    same = stored.get("metric") == meter.metric and stored.get("label") == meter.label and stored.get("num_samples") == num_samples
    values: dict[str, float | None] = dict(stored.get("values") or {}) if same else {}
    rows = [row for row in pareto_front(study) if shown_row(row, baseline_limits(timestep_study), None)]
    todo = [row for row in rows if str(row.number) not in values]
    if todo:
        echo(f"re-scoring {len(todo)} front plans by {meter.label} on {num_samples} samples")
    for row in todo:
        result = evaluator.evaluate(row.plan, num_samples, fitness=meter)
        values[str(row.number)] = float(result.fid) if result.ok else None
        study.set_user_attr(RESCORE_ATTR, record(meter.metric, meter.label, num_samples, values))
    return values


def record(metric: str, label: str, num_samples: int, values: dict[str, float | None]) -> dict[str, Any]:
    """The study attribute :data:`~optuna_diffusion.trial_plan.RESCORE_ATTR`."""
    return {"metric": metric, "label": label, "num_samples": num_samples, "values": dict(values)}


def stored_rescore(study: optuna.Study) -> tuple[str, dict[str, float | None]] | None:
    """``(column label, {trial number: value})`` of a study's re-scored front, or None."""
    stored = study.user_attrs.get(RESCORE_ATTR)
    if not isinstance(stored, dict) or not isinstance(stored.get("values"), dict):
        return None
    return f"{stored.get('label', stored.get('metric'))}@{stored.get('num_samples')}", stored["values"]
