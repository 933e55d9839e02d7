"""The Optuna objective of a plan search: a trial's plan in, (FID, MACs) out."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import optuna

from . import compat, faults
from .devices import device_name, peak_memory, reset_peak_memory
from .errors import ConfigError, PlanError
from .evaluation import Evaluation, PlanEvaluator
from .fidelity import FidelityPolicy, decide
from .plan import Plan
from .plan_suggestion import suggest_plan
from .settings import FID_SAMPLES_RULE, check_argument, positive
from .trial_plan import (
    BATCH_SIZE_ATTR,
    DEVICE_ATTR,
    DTYPE_ATTR,
    FAILURE_ATTR,
    FID_ESTIMATE_ATTR,
    FID_LOW_ATTR,
    FID_OPTIMISTIC_ATTR,
    FIDELITY_ATTR,
    FULL_FIDELITY,
    LOW_FIDELITY,
    MACS_ATTR,
    METRIC_ATTR,
    NUM_SAMPLES_ATTR,
    PEAK_MEMORY_ATTR,
    PLAN_KEY,
    SECONDS_ATTR,
    TIMESTEPS_KEY,
    plan_from_trial,
    record_live_plan,
)

OBJECTIVES = ("fid", "macs")
"""Values an objective can return, in any order."""
MACS_CONSTRAINT = "macs"
"""Name of the MACs constraint (``trial.set_constraint``)."""


class PlanObjective:
    """Scores a trial's plan with a :class:`~optuna_diffusion.evaluation.PlanEvaluator`.

    The plan comes from the sampler (:class:`~optuna_diffusion.samplers.TimestepSampler` or
    :class:`~optuna_diffusion.samplers.ArchitectureSampler`, read with
    :func:`~optuna_diffusion.samplers.plan_from_trial`); under any other sampler it is suggested
    with :func:`~optuna_diffusion.samplers.suggest_plan`, which needs ``k_min`` (and ``k_max``).

    Each trial records the user attributes ``"timesteps"`` (with ``"skips"`` and ``"reuses"`` when
    the plan skips or reuses a block), ``"macs"``, ``"num_samples"``, ``"seconds"``, ``"batch_size"``
    (images per batch its evaluation used), ``"metric"`` (when the fitness is not FID: then "FID"
    below means the evaluator's fitness value) and, when the
    evaluation failed (samples turned NaN), ``"failure"`` with the reason. A failed plan scores FID
    ``inf`` -- never NaN -- so the trial completes as a very bad one and the search goes on. With
    ``fidelity``, every trial also records ``"fidelity"`` (``"full"`` or ``"low"``) and ``"fid_low"``,
    the FID of its first ``fidelity.low_samples`` images; a trial stopped there returns its
    estimated full-size FID, ``"fid_estimate"``, and records the optimistic estimate it was judged
    by, ``"fid_optimistic"``.

    With ``macs_budget``, the constraint ``macs - macs_budget`` (feasible when <= 0) is set with
    ``trial.set_constraint("macs", ...)``, which Optuna's samplers and ``study.best_trials`` read,
    and also written as the list of the system attribute ``"constraints"``, the only form
    optuna-dashboard 0.21 shows. Optuna merges both forms into ``trial.constraints`` as
    ``{"0": v, "macs": v}``: feasibility is the same, violations count twice for every trial alike.

    Name the objectives for the dashboard and plots where the study is created::

        study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        study.set_metric_names(["FID", "MACs"])
        study.optimize(PlanObjective(evaluator, num_samples=1000, macs_budget=4e8), n_trials=500)

    Args:
        evaluator: scores a plan (FID of ``num_samples`` images, MACs of one image).
        num_samples: images per FID.
        macs_budget: most MACs a plan may spend per image; None: no constraint.
        objectives: what ``__call__`` returns, in order: ``("fid", "macs")`` (default, two
            objectives), ``("fid",)`` (one value), ...
        k_min: fewest time steps, for samplers that do not choose plans (``suggest_plan``).
        k_max: most time steps there; default ``k_min``.
        fidelity: score on a small sample first and go on to ``num_samples`` only for plans that
            could still matter (:mod:`optuna_diffusion.fidelity`); None: always the full count.
        keep_images: how many first images the evaluation passed to ``after_evaluation`` keeps.
        after_evaluation: called with the trial, its plan and its Evaluation (e.g. to upload a preview).
    """

    def __init__(
        self,
        evaluator: PlanEvaluator,
        *,
        num_samples: int,
        macs_budget: float | None = None,
        objectives: tuple[str, ...] = OBJECTIVES,
        k_min: int | None = None,
        k_max: int | None = None,
        fidelity: FidelityPolicy | None = None,
        keep_images: int = 0,
        after_evaluation: Callable[[optuna.trial.BaseTrial, Plan, Evaluation], None] | None = None,
    ) -> None:
        num_samples = check_argument(num_samples, "num_samples", int, FID_SAMPLES_RULE)
        check_argument(macs_budget, "macs_budget", float | None, positive)  # kept as given (an int budget stays one)
        if isinstance(objectives, str) or not objectives or any(o not in OBJECTIVES for o in objectives):
            raise ConfigError(f"`objectives` must be a non-empty tuple of {OBJECTIVES}, got {objectives!r}")
        if len(set(objectives)) != len(objectives):
            raise ConfigError(f"`objectives` names a value twice: {objectives!r}")
        if k_max is not None and k_min is None:
            raise ConfigError("`k_max` needs `k_min`")
        self.evaluator = evaluator
        self.num_samples = num_samples
        self.macs_budget = macs_budget
        self.objectives = tuple(objectives)
        if fidelity is not None and not isinstance(fidelity, FidelityPolicy):
            raise ConfigError(f"`fidelity` must be a FidelityPolicy or None, got {fidelity!r}")
        if fidelity is not None and not fidelity.low_samples < num_samples:
            raise ConfigError(f"`fidelity.low_samples` ({fidelity.low_samples}) must be below num_samples ({num_samples})")
        if fidelity is not None and "fid" not in objectives:
            raise ConfigError("`fidelity` needs FID among the objectives")
        if fidelity is not None and evaluator.fitness.metric != "fid":
            raise ConfigError(
                f"`fidelity` (multi-fidelity FID) needs the FID fitness; this evaluator scores {evaluator.fitness.metric}"
            )
        self.k_min = k_min
        self.k_max = k_max
        self.fidelity = fidelity
        self.keep_images = keep_images
        self.after_evaluation = after_evaluation

    def plan(self, trial: optuna.trial.BaseTrial) -> Plan:
        """The trial's plan: the sampler's, else one suggested within ``[k_min, k_max]`` steps."""
        if isinstance(trial, optuna.trial.FrozenTrial):
            return plan_from_trial(trial)
        system_attrs = compat.live_system_attrs(trial) if isinstance(trial, optuna.Trial) else {}
        if PLAN_KEY in system_attrs or TIMESTEPS_KEY in system_attrs:
            return record_live_plan(trial, system_attrs)  # type: ignore[arg-type]
        if self.k_min is None:
            raise PlanError(
                f"trial {trial.number} carries no plan: use TimestepSampler or ArchitectureSampler, "
                "or give PlanObjective(..., k_min=..., k_max=...) to suggest time steps under any sampler"
            )
        num_train = self.evaluator.model.num_train_timesteps
        return suggest_plan(trial, k_min=self.k_min, k_max=self.k_max, num_train_timesteps=num_train)

    def __call__(self, trial: optuna.trial.BaseTrial) -> float | tuple[float, ...]:
        """Evaluate the trial's plan and return the chosen objectives (FID ``inf`` on failure)."""
        plan = self.plan(trial)
        faults.reach("trial-running")
        device = self.evaluator.model.device
        reset_peak_memory(device)
        result, fidelity = self._evaluate(trial, plan)
        # Where and in what precision the plan ran: a front over trials of mixed settings shows it (``show``).
        trial.set_user_attr(DEVICE_ATTR, device_name(device))
        trial.set_user_attr(DTYPE_ATTR, str(self.evaluator.model.dtype).removeprefix("torch."))
        peak = peak_memory(device)
        if peak is not None:
            trial.set_user_attr(PEAK_MEMORY_ATTR, peak)
        trial.set_user_attr(MACS_ATTR, int(result.macs))
        trial.set_user_attr(NUM_SAMPLES_ATTR, int(result.num_samples))
        trial.set_user_attr(SECONDS_ATTR, float(result.seconds))
        if result.batch_size is not None:
            trial.set_user_attr(BATCH_SIZE_ATTR, int(result.batch_size))
        if result.metric != "fid":
            trial.set_user_attr(METRIC_ATTR, result.metric)
        if self.fidelity is not None:
            trial.set_user_attr(FIDELITY_ATTR, fidelity)
        fid = float(result.fid)
        if not result.ok or not math.isfinite(fid):
            trial.set_user_attr(FAILURE_ATTR, result.failure or f"FID is {fid}")
            fid = math.inf
        if self.macs_budget is not None:
            self._set_macs_constraint(trial, float(result.macs) - float(self.macs_budget))
        if self.after_evaluation is not None:
            self.after_evaluation(trial, plan, result)
        values: dict[str, float] = {"fid": fid, "macs": float(result.macs)}
        chosen = tuple(values[name] for name in self.objectives)
        return chosen[0] if len(chosen) == 1 else chosen

    def _evaluate(self, trial: optuna.trial.BaseTrial, plan: Plan) -> tuple[Evaluation, str]:
        """The plan's evaluation and its fidelity: ``"full"``, or ``"low"`` when it stopped early."""
        policy = self.fidelity
        study = getattr(trial, "study", None)
        if policy is None or study is None:
            return self.evaluator.evaluate(plan, self.num_samples, keep_images=self.keep_images), FULL_FIDELITY
        steps = self.evaluator.evaluate_progressively(
            plan, [policy.low_samples, self.num_samples], keep_images=self.keep_images
        )
        try:
            low = next(steps)
            if not low.ok:
                return low, LOW_FIDELITY
            trial.set_user_attr(FID_LOW_ATTR, float(low.fid))
            complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            macs = float(low.macs) if "macs" in self.objectives else None
            decision = decide(
                policy, complete, fid_low=low.fid, macs=macs, fid_of=self._stored_fid, macs_budget=self.macs_budget
            )
            if decision.promote:
                return next(steps), FULL_FIDELITY
        finally:
            steps.close()
        trial.set_user_attr(FID_ESTIMATE_ATTR, decision.estimate)
        trial.set_user_attr(FID_OPTIMISTIC_ATTR, decision.optimistic)
        return dataclasses.replace(low, fid=decision.estimate), LOW_FIDELITY

    def _stored_fid(self, trial: optuna.trial.FrozenTrial) -> float:
        """A complete trial's FID as this objective returned it."""
        values = trial.values or []
        index = self.objectives.index("fid")
        return float(values[index]) if len(values) > index else math.inf

    @staticmethod
    def _set_macs_constraint(trial: Any, violation: float) -> None:
        trial.set_constraint(MACS_CONSTRAINT, violation)
        if isinstance(trial, optuna.Trial):
            compat.write_dashboard_constraints(trial, [violation])
