"""One-off evaluations outside a study: an exported plan file or a hand-designed schedule, scored on a config's model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .baselines import baseline_names, baseline_plan
from .errors import ConfigError
from .evaluation import Evaluation
from .macs import DEFAULT_MACS_CONVENTION, check_macs_convention
from .plan import Plan
from .population import shift_mu
from .study import build_evaluator, metric_label
from .study_config import StudyConfig


def load_plan_file(path: str | Path) -> Plan:
    """A Plan from an exported JSON file (``{"plan": {...}, ...}``) or a bare plan JSON."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"plan file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"plan file {path} is not valid JSON: {error}") from None
    return Plan.from_dict(data["plan"] if isinstance(data, dict) and "plan" in data else data)


def evaluate_plan_file(
    config: StudyConfig, plan_path: Path | None, *, baseline: str | None, steps: int, samples: int, device: str = "cpu",
    solver: str | None = None, macs_convention: str = DEFAULT_MACS_CONVENTION,
) -> tuple[Evaluation, Plan, dict[str, int]]:
    """Score an exported plan or a baseline with ``samples`` samples on the config's model.

    ``solver``: run the plan with this solver instead of the one it carries (or the config's).
    Returns the evaluation, the plan and its MACs per image by component (in ``macs_convention``,
    :data:`~optuna_diffusion.macs.MACS_CONVENTIONS`).
    """
    check_macs_convention(macs_convention)
    plan = load_plan_file(plan_path) if plan_path is not None else None
    if plan is not None and solver is not None:
        plan = dataclasses.replace(plan, solver=solver)
    evaluator = build_evaluator(config, device=device, macs_convention=macs_convention)
    try:
        if plan is None:
            plan = baseline_plan(baseline, steps, evaluator.generator.schedule, mu=shift_mu(evaluator))
        return evaluator.evaluate(plan, samples), plan, evaluator.macs_parts(plan)
    finally:
        evaluator.close()


def baseline_table(config: StudyConfig, *, steps: list[int], samples: int, device: str = "cpu") -> str:
    """FID and MACs of every hand-designed schedule at each step count, as a text table."""
    evaluator = build_evaluator(config, device=device)
    try:
        schedule = evaluator.generator.schedule
        names = baseline_names(schedule)
        header = f"{config.model.source}, {evaluator.generator.solver_names[0]}, {samples} samples, {metric_label(config)}"
        lines = [header, f"{'K':>3} " + " ".join(f"{n:>10}" for n in names)]
        for k in steps:
            plans = [baseline_plan(name, k, schedule, mu=shift_mu(evaluator)) for name in names]
            fids = [evaluator.evaluate(plan, samples).fid for plan in plans]
            lines.append(f"{k:>3} " + " ".join(f"{fid:10.3f}" for fid in fids))
        return "\n".join(lines)
    finally:
        evaluator.close()


