"""The storage protocol: every attribute optuna-diffusion writes to or reads from an Optuna storage.

A search is an ordinary Optuna study, so everything it records lives in the storage and any worker,
a resumed run, ``show``, ``export`` and optuna-dashboard read it back. This module owns the keys and
the encoding of a :class:`~optuna_diffusion.plan.Plan` onto a trial; no other module spells a key.
Checked against Optuna 5.0.0 (RDB and journal storages) and optuna-dashboard 0.21.0.

Trial system attributes (written by the samplers in ``before_trial``, before the objective runs):

=================================  ==========================================================
``optuna_diffusion:timesteps``     ``TimestepSampler``'s genome: the time steps, largest first
``optuna_diffusion:solver``        with it, the solver of the genome when stage 1 searches solvers
``optuna_diffusion:plan``          ``ArchitectureSampler``'s genome: ``Plan.to_dict()``
``optuna_diffusion:genome_space``  the sampler's space: ``{"num_train_timesteps", "k_min",
                                   "k_max"}``, ``"solvers"`` when it searches them and, for
                                   stage 2, ``"blocks"`` (searched names)
``constraints``                    the MACs constraint where optuna-dashboard 0.21 reads it,
                                   written by the objective (:mod:`optuna_diffusion.compat`)
``<Sampler>:generation``           the trial's generation (Optuna's ``BaseGASampler``)
``failed_trial``                   the number of the trial a heartbeat retry repeats (Optuna's
                                   ``RetryHeartbeatStaleTrialCallback``; the retry copies the
                                   genome attributes above, so it evaluates the same plan)
=================================  ==========================================================

Trial parameters (suggested by the objective, answered by the samplers with the genome, so that
Optuna's plots and the dashboard's parameter views work on a plan search): ``num_steps`` (K),
``t0`` .. ``t{K-1}`` (the time steps, largest first), ``solver`` when the space searches solvers and,
for stage 2, ``step{i}/{block}`` for every
step and searched block: ``"run"``, ``"skip"`` or ``"reuse"`` (a block inside a branch reused at that
step reads ``"reuse"``). Under any other sampler,
:func:`~optuna_diffusion.plan_suggestion.suggest_plan` suggests ``num_steps`` and the
codes ``timestep_code_{i}`` instead (see there).

Trial user attributes (written by the objective): ``timesteps``, ``skips``, ``reuses``, ``solver``
(the plan, readable in the dashboard; skips, reuses and solver only when the plan has them), ``macs``, ``num_samples``,
``seconds``, ``failure`` (why a plan scored FID inf), ``fidelity`` (``"full"`` or ``"low"``),
``fid_low``, ``fid_estimate``, ``fid_optimistic`` (multi-fidelity, :mod:`optuna_diffusion.fidelity`)
``stopped`` (a trial that did not run because the global budget was claimed,
:mod:`optuna_diffusion.budget`), ``batch_size`` (the images per batch its evaluation used: smaller than
``[sampling] batch_size`` after a batch ran out of memory and was redone at half size) and ``metric``
(the fitness metric of its first value when it is not FID: ``"clip-score"`` or ``"teacher"``).

Study user attributes: ``optuna_diffusion``, ``{"stage": ..., "config": StudyConfig.to_dict()}``,
the marker that tells our studies from other tools' (:mod:`optuna_diffusion.study`); on the
time-step study, ``optuna_diffusion:baseline_fids``, ``{K: {schedule name: FID}}`` of the
hand-designed schedules at the study's sample count (written by the runner after stage 1, read by
the front tables, :mod:`optuna_diffusion.front`); on both stage studies,
``optuna_diffusion:rescore``, ``{"metric": ..., "label": ..., "num_samples": N, "values": {trial number:
value}}``, the final front re-scored with another metric (``[fitness] rescore``; a finished trial's own
attributes cannot change, so the values are kept on the study, by trial number; written by the runner
after the stage, shown by ``show``); and
``optuna_diffusion:fixed_macs``, ``{component: MACs}`` every plan pays whatever its steps
(text encoders and VAE decoder per image, the classifier per step; written by the runner, shown by
``show``); on the architecture study, ``optuna_diffusion:sensitivity``, the probes of single changes
(``Sensitivity.to_dict()``, :mod:`optuna_diffusion.sensitivity`; written by the first worker that
starts stage 2 with ``[architecture] probe_samples``, read by every worker and on resume).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial

from .compat import DASHBOARD_CONSTRAINTS_KEY, live_system_attrs
from .errors import PlanError
from .plan import Plan, timestep_range

# Trial system attributes ---------------------------------------------------------------------------
TIMESTEPS_KEY = "optuna_diffusion:timesteps"
SOLVER_KEY = "optuna_diffusion:solver"
PLAN_KEY = "optuna_diffusion:plan"
SPACE_KEY = "optuna_diffusion:genome_space"
RETRIED_FROM_KEY = "failed_trial"
DASHBOARD_CONSTRAINTS = DASHBOARD_CONSTRAINTS_KEY

# Trial parameters ----------------------------------------------------------------------------------
NUM_STEPS_PARAM = "num_steps"
TIMESTEP_PARAM = "t{index}"
SOLVER_PARAM = "solver"
BLOCK_PARAM = "step{index}/{block}"
CODE_PARAM = "timestep_code_{index}"
RUN, SKIP, REUSE = "run", "skip", "reuse"

# Trial user attributes -----------------------------------------------------------------------------
TIMESTEPS_ATTR = "timesteps"
SKIPS_ATTR = "skips"
REUSES_ATTR = "reuses"
SOLVER_ATTR = "solver"
MACS_ATTR = "macs"
NUM_SAMPLES_ATTR = "num_samples"
SECONDS_ATTR = "seconds"
FAILURE_ATTR = "failure"
FIDELITY_ATTR = "fidelity"
FULL_FIDELITY, LOW_FIDELITY = "full", "low"
FID_LOW_ATTR = "fid_low"
FID_ESTIMATE_ATTR = "fid_estimate"
FID_OPTIMISTIC_ATTR = "fid_optimistic"
BUDGET_STOPPED_ATTR = "stopped"
BATCH_SIZE_ATTR = "batch_size"
METRIC_ATTR = "metric"
DEVICE_ATTR = "device"
DTYPE_ATTR = "dtype"
PEAK_MEMORY_ATTR = "peak_memory_bytes"

# Stages: each names its study (``NAME-timesteps``), its TOML section and its marker ----------------
STAGES = (TIMESTEP_STAGE, ARCHITECTURE_STAGE) = ("timesteps", "architecture")

# Study user attributes -----------------------------------------------------------------------------
STUDY_MARKER = "optuna_diffusion"
MARKER_STAGE_KEY, MARKER_CONFIG_KEY = "stage", "config"
BASELINE_FIDS_ATTR = "optuna_diffusion:baseline_fids"
FIXED_MACS_ATTR = "optuna_diffusion:fixed_macs"
RESCORE_ATTR = "optuna_diffusion:rescore"
SENSITIVITY_ATTR = "optuna_diffusion:sensitivity"


# --------------------------------------------------------------------------------------------------
# Genomes (written by the samplers)
# --------------------------------------------------------------------------------------------------


def study_marker(stage: str, config: dict[str, Any]) -> dict[str, Any]:
    """The value of :data:`STUDY_MARKER`: the study's stage and its ``StudyConfig.to_dict()``."""
    return {MARKER_STAGE_KEY: stage, MARKER_CONFIG_KEY: config}


def read_marker(user_attrs: dict[str, Any]) -> dict[str, Any]:
    """The :data:`STUDY_MARKER` of a study's user attributes, ``{}`` when it has none (or a foreign one)."""
    marker = user_attrs.get(STUDY_MARKER)
    return marker if isinstance(marker, dict) else {}


def timestep_genome_attrs(steps: Sequence[int], space: dict[str, Any], solver: str | None = None) -> dict[str, Any]:
    """System attributes of a stage-1 genome: the time steps, the solver (when searched) and the sampler's space."""
    attrs = {SPACE_KEY: dict(space), TIMESTEPS_KEY: [int(t) for t in steps]}
    return {**attrs, SOLVER_KEY: solver} if solver is not None else attrs


def plan_genome_attrs(plan: Plan, space: dict[str, Any]) -> dict[str, Any]:
    """System attributes of a stage-2 genome: the whole plan and the sampler's space."""
    return {SPACE_KEY: dict(space), PLAN_KEY: plan.to_dict()}


def stored_space(system_attrs: dict[str, Any]) -> dict[str, Any] | None:
    space = system_attrs.get(SPACE_KEY)
    return space if isinstance(space, dict) else None


def _is_int_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def stored_timesteps(trial: FrozenTrial) -> tuple[int, ...] | None:
    """The time steps a trial of the time-step search carries, or None.

    The sampler's system attribute first; else the ``timesteps`` user attribute that
    :func:`~optuna_diffusion.plan_suggestion.suggest_plan` records under other samplers, so such trials can seed a later search.
    """
    steps = trial.system_attrs.get(TIMESTEPS_KEY)
    if steps is None:
        steps = trial.user_attrs.get(TIMESTEPS_ATTR)
    return tuple(steps) if _is_int_list(steps) else None


def stored_solver(trial: FrozenTrial) -> str | None:
    """The solver a trial's plan carries (the sampler's genome, else the objective's user attribute), or None."""
    solver = trial.system_attrs.get(SOLVER_KEY, trial.user_attrs.get(SOLVER_ATTR))
    return solver if isinstance(solver, str) else None


def stored_num_steps(system_attrs: dict[str, Any]) -> int | None:
    """K of the genome a sampler stored in these system attributes, or None."""
    plan = system_attrs.get(PLAN_KEY)
    steps = plan.get("timesteps") if isinstance(plan, dict) else system_attrs.get(TIMESTEPS_KEY)
    return len(steps) if isinstance(steps, (list, tuple)) else None


def _timestep_grid(system_attrs: dict[str, Any]) -> dict[str, Any]:
    """``num_train_timesteps`` and ``schedule_kind`` of the sampler's space, as Plan arguments."""
    space = stored_space(system_attrs) or {}
    return {"num_train_timesteps": int(space.get("num_train_timesteps", 1000)), "schedule_kind": space.get("schedule_kind", "ddpm")}


def genome_plan(system_attrs: dict[str, Any]) -> Plan | None:
    """The plan a sampler stored in these system attributes (may raise PlanError), or None."""
    if PLAN_KEY in system_attrs:
        return Plan.from_dict(system_attrs[PLAN_KEY])
    if TIMESTEPS_KEY in system_attrs:
        return Plan(system_attrs[TIMESTEPS_KEY], solver=system_attrs.get(SOLVER_KEY), **_timestep_grid(system_attrs))
    return None


def stored_plan(trial: FrozenTrial) -> Plan | None:
    """The plan a finished or running trial carries, or None when it carries none (or a broken one).

    Read from, in order: the plan of ``ArchitectureSampler``; the time steps of ``TimestepSampler``
    (a plan that skips nothing); the user attributes ``timesteps``, ``skips`` and ``reuses`` that
    the objective records under any sampler.
    """
    try:
        plan = genome_plan(trial.system_attrs)
        if plan is not None:
            return plan
        steps = stored_timesteps(trial)
        if steps is None:
            return None
        skips = trial.user_attrs.get(SKIPS_ATTR) or ()
        reuses = trial.user_attrs.get(REUSES_ATTR) or ()
        return Plan(steps, skips, reuses, solver=stored_solver(trial), **_timestep_grid(trial.system_attrs))
    except PlanError:
        return None


def plan_from_trial(trial: optuna.Trial | FrozenTrial) -> Plan:
    """The plan :class:`~optuna_diffusion.TimestepSampler` or :class:`~optuna_diffusion.ArchitectureSampler`
    chose for ``trial``.

    On a live trial this also suggests the plan's parameters (the sampler answers with the genome)
    and records its user attributes; on a :class:`~optuna.trial.FrozenTrial` it only reads
    (see :func:`stored_plan`).

    Raises:
        PlanError: the trial carries no plan, or a parameter was fixed (enqueued) to another value.
    """
    if isinstance(trial, FrozenTrial):
        plan = stored_plan(trial)
        if plan is None:
            raise PlanError(f"trial {trial.number} carries no plan")
        return plan
    return record_live_plan(trial)


def record_live_plan(trial: optuna.Trial, system_attrs: dict[str, Any] | None = None) -> Plan:
    """:func:`plan_from_trial` of a live trial, given its system attributes if already read."""
    plan = _live_plan(trial, system_attrs)
    record_plan_attrs(trial, plan)
    return plan


def timesteps_from_trial(trial: optuna.Trial | FrozenTrial) -> tuple[int, ...]:
    """The time steps of the plan a sampler chose for ``trial`` (the stage-1 genome).

    Like :func:`plan_from_trial`, but on a live trial records only the user attribute ``timesteps``.
    """
    if isinstance(trial, FrozenTrial):
        return plan_from_trial(trial).timesteps
    plan = _live_plan(trial)
    trial.set_user_attr(TIMESTEPS_ATTR, list(plan.timesteps))
    return plan.timesteps


def _live_plan(trial: optuna.Trial, system_attrs: dict[str, Any] | None = None) -> Plan:
    """The plan a sampler stored on a live trial, after suggesting its parameters (answered with it)."""
    if system_attrs is None:
        system_attrs = live_system_attrs(trial)
    space = stored_space(system_attrs)
    plan = genome_plan(system_attrs)
    if plan is None or space is None:
        raise PlanError(
            f"trial {trial.number} carries no plan: create the study with sampler=TimestepSampler(...) or "
            "ArchitectureSampler(...), or call suggest_plan(trial, k_min=..., k_max=...), which works with any sampler"
        )
    suggest_plan_params(trial, plan, space)
    return plan


# --------------------------------------------------------------------------------------------------
# The plan as trial parameters
# --------------------------------------------------------------------------------------------------


def _choices_of(plan: Plan, step: int, blocks: Sequence[str], branches: dict[str, Sequence[str]]) -> dict[str, str]:
    skipped, reused = plan.skips[step], plan.reuses[step]
    covered = {inner for branch in reused for inner in branches.get(branch, ())}
    return {name: SKIP if name in skipped else REUSE if name in reused or name in covered else RUN for name in blocks}


def plan_params(plan: Plan, space: dict[str, Any]) -> dict[str, tuple[BaseDistribution, Any]]:
    """The trial parameters that show ``plan``, each with its distribution and value.

    ``num_steps``, ``t0`` .. ``t{K-1}``, ``solver`` when ``space`` searches solvers and, when it
    names blocks (stage 2), the choice of every block at every step.
    """
    low, high = timestep_range(int(space["num_train_timesteps"]), space.get("schedule_kind", "ddpm"))
    params: dict[str, tuple[BaseDistribution, Any]] = {
        NUM_STEPS_PARAM: (IntDistribution(int(space["k_min"]), int(space["k_max"])), plan.num_steps)
    }
    for i, t in enumerate(plan.timesteps):
        params[TIMESTEP_PARAM.format(index=i)] = (IntDistribution(low, high), t)
    if space.get("solvers"):
        params[SOLVER_PARAM] = (CategoricalDistribution(tuple(space["solvers"])), plan.solver)
    blocks = space.get("blocks") or ()
    branches = space.get("branches") or {}
    for step in range(plan.num_steps):
        for name, choice in _choices_of(plan, step, blocks, branches).items():
            skippable = name not in branches
            choices = (RUN, *((SKIP,) if skippable else ()), *((REUSE,) if step > 0 else ()))
            params[BLOCK_PARAM.format(index=step, block=name)] = (CategoricalDistribution(choices), choice)
    return params


def fits(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is a value of ``distribution`` (an int or categorical one)."""
    if isinstance(distribution, IntDistribution):
        return isinstance(value, int) and distribution.low <= value <= distribution.high
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    return False


def suggest_plan_params(trial: optuna.trial.BaseTrial, plan: Plan, space: dict[str, Any]) -> None:
    """Suggest the parameters of :func:`plan_params`; the samplers answer them with ``plan``.

    Raises:
        PlanError: a parameter came back different (fixed or enqueued to another value).
    """
    for name, (distribution, value) in plan_params(plan, space).items():
        if isinstance(distribution, IntDistribution):
            got = trial.suggest_int(name, distribution.low, distribution.high)
        else:
            got = trial.suggest_categorical(name, distribution.choices)
        if got != value:
            raise PlanError(
                f"trial {trial.number} has parameter {name} = {got!r} (fixed or enqueued?) "
                f"but the sampler chose {value!r} for the plan {plan}"
            )


def record_plan_attrs(trial: optuna.trial.BaseTrial, plan: Plan, *, blocks: bool = True) -> None:
    """The user attributes that show the plan: ``timesteps``, ``solver`` and ``skips``/``reuses`` when it has them."""
    # Every attribute is its own storage transaction: leave out the empty skips of a full-network plan.
    trial.set_user_attr(TIMESTEPS_ATTR, list(plan.timesteps))
    if plan.solver is not None:
        trial.set_user_attr(SOLVER_ATTR, plan.solver)
    if blocks and not plan.is_full_network:
        data = plan.to_dict()
        trial.set_user_attr(SKIPS_ATTR, data["skips"])
        trial.set_user_attr(REUSES_ATTR, data["reuses"])


def is_low_fidelity(trial: FrozenTrial) -> bool:
    """Whether the trial's FID is a small-sample estimate (:mod:`optuna_diffusion.fidelity`)."""
    return trial.user_attrs.get(FIDELITY_ATTR) == LOW_FIDELITY


def finite_values(trial: FrozenTrial) -> bool:
    return trial.values is not None and all(math.isfinite(v) for v in trial.values)
