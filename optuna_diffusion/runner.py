"""What the CLI commands do, as plain functions: optimize, show, export, evaluate, baselines, dashboard."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from . import compat, faults
from .baselines import baseline_names, baseline_plan
from .budget import TrialBudget
from .errors import ConfigError, OptunaDiffusionError, StorageError, first_line
from .evaluation import Evaluation, PlanEvaluator, PlanMacs
from .fidelity import FidelityPolicy
from .front import baseline_limits, format_front, pareto_front
from .macs import DEFAULT_MACS_CONVENTION, MACS_CONVENTIONS, check_macs_convention
from .objective import PlanObjective
from .plan import Plan
from .samplers import ArchitectureSampler, TimestepSampler
from .sensitivity import Sensitivity, anchor_plan, probe_sensitivity, single_changes
from .storage import artifact_dir, check_storage_url, check_stored, open_storage, redacted, remove_created, storage_files
from .rescore import rescore_front, stored_rescore
from .study import (
    PREVIEW_SAMPLES,
    PreviewUploader,
    build_evaluator,
    check_device,
    completed_trials,
    load_classifier,
    metric_label,
    open_study,
)
from .study_config import StudyConfig
from .trial_plan import (
    ARCHITECTURE_STAGE,
    BASELINE_FIDS_ATTR,
    DEVICE_ATTR,
    DTYPE_ATTR,
    FIXED_MACS_ATTR,
    MARKER_CONFIG_KEY,
    MARKER_STAGE_KEY,
    PEAK_MEMORY_ATTR,
    SENSITIVITY_ATTR,
    STAGES,
    TIMESTEP_STAGE,
    is_low_fidelity,
    plan_from_trial,
    read_marker,
    stored_plan,
)

Echo = Callable[[str], None]

_STORAGE_FAILURES = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, optuna.exceptions.StorageInternalError)
"""What a database that went away raises through Optuna."""


def population_split(population: int) -> dict[str, int]:
    """Parents, mutants and crossovers in the method's proportions (10/25/15 of 50)."""
    return {
        "population_size": population,
        "num_parents": max(2, population // 5),
        "num_mutants": population // 2,
        "num_crossovers": population * 3 // 10,
    }


def stage_population(stage: str, population: int, step_counts: int = 1) -> dict[str, int]:
    """The population split a stage's sampler and its multi-fidelity policy use.

    Stage 1, after generation 0 (the hand-designed schedules and random plans), fills each generation
    with refinements (Optuna's GPSampler fitted in a trust region around the best plan, one step
    nudged while few plans are known there) and proposals of Optuna's TPE fitted on the evaluated
    plans: half refinements at one K, three tenths over several K. Each child works on the plans of
    one uniformly drawn K and, when stage 1 also searches the solver, solver
    (:class:`~optuna_diffusion.samplers.GuidedTimestepSpace`). The method's mutants and crossovers
    searched worse at one K, over several K and with the solver (``benchmarks/search_quality.py``,
    ``benchmarks/search_front.py``, ``benchmarks/per_solver.py``; figures in benchmarks/README.md).
    Stage 2 keeps the method's split with half of its mutants as refinements (one block choice of a
    parent toggled): its genome is large -- a mutant toggles about one in ten of K x blocks
    choices -- so without single toggles the search cannot polish a plan that is one change from better.
    """
    split = population_split(population)
    if stage == TIMESTEP_STAGE:
        refinements = population // 2 if step_counts == 1 else population * 3 // 10
        return {**split, "num_mutants": 0, "num_crossovers": 0, "num_refinements": refinements,
                "num_proposals": population - refinements}
    refinements = split["num_mutants"] // 2
    return {**split, "num_mutants": split["num_mutants"] - refinements, "num_refinements": refinements}


def study_population(stage: str, config: StudyConfig) -> dict[str, int]:
    """:func:`stage_population` of a study's ``stage``: its population size and stage 1's number of K."""
    steps = config.timesteps
    return stage_population(stage, getattr(config, stage).population_size, steps.k_max - steps.k_min + 1)


def _searched_solvers(config: StudyConfig, evaluator: PlanEvaluator) -> tuple[str, ...] | None:
    """The solvers stage 1 searches (``[sampling] solver = "search"`` or a list), or None."""
    return evaluator.generator.solver_names if config.sampling.searches_solver else None


def shift_mu(evaluator: PlanEvaluator) -> float | None:
    """The ``mu`` the model's pipeline shifts its scheduler's sigmas by (Flux-dev's dynamic shifting), else None."""
    model = evaluator.generator.model
    return model.family.shift_mu(model)


def _initial_plans(config: StudyConfig, evaluator: PlanEvaluator) -> list[Plan]:
    """Hand-designed schedules for every allowed K (under every searched solver), as the first generation's seeds."""
    schedule = evaluator.generator.schedule
    stage = config.timesteps
    names = baseline_names(schedule)
    solvers = _searched_solvers(config, evaluator) or (None,)
    mu = shift_mu(evaluator)
    plans = [
        dataclasses.replace(baseline_plan(name, k, schedule, mu=mu), solver=solver)
        for k in range(stage.k_min, stage.k_max + 1) for name in names for solver in solvers
    ]
    unique = list(dict.fromkeys(plans))
    return unique[: stage.population_size]


def check_macs_budget(budget: float | None, evaluator: PlanEvaluator) -> None:
    """Raise ConfigError if ``budget`` is below the cheapest plan (:meth:`PlanEvaluator.cheapest_step_macs`)."""
    if budget is not None and budget < evaluator.cheapest_step_macs():
        raise ConfigError(
            f"architecture.macs_budget = {budget:g} MACs is below the cheapest possible plan "
            f"({evaluator.cheapest_step_macs():g} MACs: one step with every skippable block skipped)"
        )


def sampler_for(
    stage: str, config: StudyConfig, evaluator: PlanEvaluator, sensitivity: Sensitivity | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler a study runs ``stage`` with: its population split, seed and, for stage 1, the baseline seeds
    and the searched solvers (``[sampling] solver = "search"`` or a list);
    for stage 2, the probes of single changes and their stacks as seeds (``sensitivity``)."""
    seed = config.sampling.seed
    if stage == TIMESTEP_STAGE:
        t = config.timesteps
        return TimestepSampler(
            k_min=t.k_min,
            k_max=t.k_max,
            num_train_timesteps=evaluator.generator.schedule.num_train_timesteps,
            schedule_kind=evaluator.generator.schedule.kind,
            solvers=_searched_solvers(config, evaluator),
            initial_plans=_initial_plans(config, evaluator),
            seed=seed,
            **study_population(stage, config),
        )
    return ArchitectureSampler(
        source_study=config.stage_study_name(TIMESTEP_STAGE),
        blocks=evaluator.generator.switch.blocks,
        k_min=config.timesteps.k_min,
        k_max=config.timesteps.k_max,
        num_train_timesteps=evaluator.generator.schedule.num_train_timesteps,
        schedule_kind=evaluator.generator.schedule.kind,
        sensitivity=sensitivity,
        initial_plans=None if sensitivity is None else sensitivity.stacks[: config.architecture.population_size],
        seed=seed,
        **study_population(stage, config),
    )


def stage2_sensitivity(
    config: StudyConfig, storage: optuna.storages.BaseStorage, evaluator: PlanEvaluator, echo: Echo
) -> Sensitivity | None:
    """The probes stage 2 is steered by: those stored on its study, else measured now on stage 1's anchor plan.

    None when ``[architecture] probe_samples`` is 0 or stage 1 has no complete plan yet."""
    if not config.architecture.probe_samples:
        return None
    samples = min(config.architecture.probe_samples, config.architecture.num_samples)
    study = _load_or_none(storage, config.stage_study_name(ARCHITECTURE_STAGE))
    if study is not None and SENSITIVITY_ATTR in study.user_attrs:
        return Sensitivity.from_dict(study.user_attrs[SENSITIVITY_ATTR])
    source = _load_or_none(storage, config.stage_study_name(TIMESTEP_STAGE))
    anchor = None if source is None else anchor_plan(source, stored_plan)
    if anchor is None:
        return None
    count = len(single_changes(anchor, evaluator.generator.switch.blocks))
    echo(f"stage architecture: probing {count} single skips and reuses of {anchor} ({samples} samples each)")
    return probe_sensitivity(evaluator, anchor, samples, polish_samples=config.architecture.num_samples)


@dataclass
class StartedTrials:
    """The trials whose objective this process started, so that an interrupted one can be failed."""

    trials: list[tuple[optuna.Study, optuna.Trial]] = field(default_factory=list)

    def add(self, trial: optuna.Trial) -> None:
        self.trials.append((trial.study, trial))

    def fail_running(self, *, timeout: float = 10.0) -> None:
        """Mark FAIL those still RUNNING (so they are retried), in a thread given ``timeout`` seconds.

        A new thread gets its own database session: the main thread's may be in the middle of the
        statement the Ctrl-C interrupted. A trial left RUNNING anyway goes stale and is retried.
        """

        def fail() -> None:
            for study, trial in self.trials:
                stored = compat.storage_of(study).get_trial(compat.trial_id_of(trial))
                if stored.state == TrialState.RUNNING:
                    compat.fail_trial(study, trial)

        worker = threading.Thread(target=fail, name="fail-interrupted-trials", daemon=True)
        worker.start()
        worker.join(timeout)


def _objective(
    stage: str, config: StudyConfig, evaluator: PlanEvaluator, preview: PreviewUploader, budget: TrialBudget,
    started: StartedTrials,
) -> Callable[[optuna.Trial], Any]:
    settings = getattr(config, stage)
    population = study_population(stage, config)
    low_samples = config.low_fidelity_samples(stage)
    fidelity = None if low_samples is None else FidelityPolicy(low_samples=low_samples, keep=population["num_parents"])
    objective = PlanObjective(
        evaluator,
        num_samples=settings.num_samples,
        macs_budget=getattr(settings, "macs_budget", None),
        fidelity=fidelity,
        keep_images=PREVIEW_SAMPLES,
        after_evaluation=preview,
    )

    def within_budget(trial: optuna.Trial) -> Any:
        started.add(trial)
        if not budget.claim(trial):
            budget.stop_trial(trial)
        return objective(trial)

    return within_budget


def _caused_by_the_storage(error: BaseException) -> bool:
    """Whether a database that went away is anywhere in the chain of ``error``.

    (Optuna 5.0's ``_run_trial`` can turn a lost connection into an UnboundLocalError while it tries
    to store the trial's failure; the storage error is then its context.)"""
    while error is not None:
        if isinstance(error, _STORAGE_FAILURES):
            return True
        error = _inner(error)
    return False


def _inner(error: BaseException) -> BaseException | None:
    """The error ``error`` was raised from or while handling (None for ``raise ... from None``)."""
    return error.__cause__ if error.__cause__ is not None or error.__suppress_context__ else error.__context__


def root_cause(error: BaseException) -> BaseException:
    """The innermost error a chain of re-raises started from (the driver's, under Optuna's and SQLAlchemy's)."""
    while (inner := _inner(error)) is not None:
        error = inner
    return error


def _between_trials(study: optuna.Study, trial: FrozenTrial) -> None:
    faults.reach("between-trials")


def run_optimize(
    config: StudyConfig,
    storage_url: str,
    *,
    stages: tuple[str, ...] = STAGES,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str = "auto",
    heartbeat_interval: int = 30,
    show_all: bool = False,
    echo: Echo = print,
) -> dict[str, optuna.Study]:
    """Run (or resume) the chosen stages; each stage stops at its trial budget counted over all workers.

    Everything that can be checked is checked before the storage is opened (opening creates the
    SQLite file or the tables), the model included. A one-line error raised after that (a plan the
    model cannot run, stage 2 without stage 1 ...) removes the SQLite or journal file and the
    ``NAME-artifacts/`` folder this run created, unless the storage holds a completed trial by then;
    what existed before the run is never removed. On an RDB storage a trial whose worker died
    (no heartbeat for 3 x ``heartbeat_interval`` seconds, or none at all since it started) is failed
    and retried with the same plan by the next worker that starts a trial.

    Raises:
        KeyboardInterrupt: after a Ctrl-C, once the interrupted trials are marked FAIL (retried on resume).
        StorageError: the database went away; completed trials are stored, rerun to resume.
    """
    for stage in stages:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    check_device(device)
    check_storage_url(storage_url)
    created = [path for path in storage_files(storage_url, config.name) if not path.exists()]
    faults.reach("model-loading")
    evaluator = build_evaluator(config, device=device, teacher_dir=artifact_dir(storage_url, config.name) / "teacher")
    started = StartedTrials()
    storage = None
    try:
        if ARCHITECTURE_STAGE in stages:
            check_macs_budget(config.architecture.macs_budget, evaluator)
        storage = open_storage(storage_url, heartbeat_interval=heartbeat_interval)
        preview = PreviewUploader(artifact_dir(storage_url, config.name))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        compat.quiet_interrupted_trials()
        return {
            stage: _run_stage(stage, config, storage, evaluator, preview, started, n_trials=n_trials, timeout=timeout,
                              show_all=show_all, echo=echo, where=redacted(storage_url))
            for stage in stages
        }
    except KeyboardInterrupt:
        faults.reach("interrupt-cleanup")
        started.fail_running()
        raise
    except Exception as error:
        if isinstance(error, OptunaDiffusionError) and not isinstance(error, StorageError):
            remove_created(created, storage, [config.stage_study_name(s) for s in STAGES])  # a failed start leaves no new study file behind
        if isinstance(error, OptunaDiffusionError) or not _caused_by_the_storage(error):
            raise
        raise StorageError(
            f"lost the storage {redacted(storage_url)} ({first_line(root_cause(error))}); completed trials are "
            "stored, run the same command again to resume"
        ) from None
    finally:
        evaluator.close()


def _run_stage(
    stage: str, config: StudyConfig, storage: optuna.storages.BaseStorage, evaluator: PlanEvaluator,
    preview: PreviewUploader, started: StartedTrials, *, n_trials: int | None, timeout: float | None, show_all: bool,
    echo: Echo, where: str,
) -> optuna.Study:
    sensitivity = stage2_sensitivity(config, storage, evaluator, echo) if stage == ARCHITECTURE_STAGE else None
    study = open_study(config, stage, storage, sampler_for(stage, config, evaluator, sensitivity))
    if sensitivity is not None and SENSITIVITY_ATTR not in study.user_attrs:
        study.set_user_attr(SENSITIVITY_ATTR, sensitivity.to_dict())
    fixed = {**evaluator.per_image_macs, "classifier_per_step": evaluator.classifier_step_macs}
    fixed = {name: macs for name, macs in fixed.items() if macs}
    if fixed and study.user_attrs.get(FIXED_MACS_ATTR) != fixed:
        study.set_user_attr(FIXED_MACS_ATTR, fixed)
    budget = TrialBudget(n_trials or getattr(config, stage).n_trials)
    remaining = budget.total - completed_trials(study)
    echo(f"stage {stage}: study {study.study_name}, {budget.total - remaining}/{budget.total} trials done")
    if remaining > 0:
        study.optimize(
            _objective(stage, config, evaluator, preview, budget, started),
            n_trials=remaining,
            timeout=timeout,
            callbacks=[optuna.study.MaxTrialsCallback(budget.total, states=(TrialState.COMPLETE,)), _between_trials],
            show_progress_bar=True,
        )
    complete, running = budget.counts(study)
    if complete < budget.total and running:
        echo(
            f"{complete}/{budget.total} trials complete; {running} still running elsewhere. A crashed "
            "worker's trial is retried once its heartbeat is stale: run this command again then."
        )
    timestep_study = study if stage == TIMESTEP_STAGE else _load_or_none(storage, config.stage_study_name(TIMESTEP_STAGE))
    if stage == TIMESTEP_STAGE and complete >= budget.total:
        record_baseline_fids(study, config, evaluator)
    if evaluator.rescore_fitness is not None and complete >= budget.total:
        samples = config.fitness.rescore_samples or getattr(config, stage).num_samples
        rescore_front(study, evaluator, num_samples=samples, timestep_study=timestep_study, echo=echo)
    echo(format_front(pareto_front(study), limits=baseline_limits(timestep_study), show_all=show_all,
                      metric=metric_label(config), rescored=stored_rescore(study)))
    echo(f"stored in {where} as study {study.study_name!r}")
    return study


def _load_or_none(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def record_baseline_fids(
    study: optuna.Study, config: StudyConfig, evaluator: PlanEvaluator
) -> dict[str, dict[str, float | None]]:
    """FID of every hand-designed schedule at every K of the study, stored on the study.

    A schedule the search already evaluated at full size is read from its trial; the others are
    evaluated now, with the study's sample count. The front tables hide plans worse than the worst
    of them (:mod:`optuna_diffusion.front`).
    """
    stored = study.user_attrs.get(BASELINE_FIDS_ATTR) or {}
    schedule = evaluator.generator.schedule
    evaluated = {
        plan: trial.values[0]
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not is_low_fidelity(trial) and (plan := stored_plan(trial)) is not None and trial.values
    }
    fids: dict[str, dict[str, float | None]] = {}
    stage = config.timesteps
    for k in range(stage.k_min, stage.k_max + 1):
        known = stored.get(str(k), {})
        fids[str(k)] = {}
        for name in baseline_names(schedule):
            if name in known:
                fids[str(k)][name] = known[name]
                continue
            plan = baseline_plan(name, k, schedule, mu=shift_mu(evaluator))
            fid = evaluated[plan] if plan in evaluated else evaluator.evaluate(plan, stage.num_samples).fid
            fids[str(k)][name] = float(fid) if math.isfinite(fid) else None
    if fids != stored:
        study.set_user_attr(BASELINE_FIDS_ATTR, fids)
    return fids


def load_stage_study(config: StudyConfig, storage_url: str, stage: str) -> optuna.Study:
    """The stored study of ``stage``; a one-line error if it does not exist (nothing is created)."""
    if stage not in STAGES:
        raise ConfigError(f"--stage must be {' or '.join(STAGES)}, got {stage!r}")
    check_stored(storage_url)
    storage = open_storage(storage_url)
    name = config.stage_study_name(stage)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ConfigError(f"no study {name!r} in {storage_url}; run optuna-diffusion optimize first") from None


def show_front(
    config: StudyConfig, storage_url: str, stage: str, *, max_fid: float | None, show_all: bool,
    macs_convention: str = DEFAULT_MACS_CONVENTION,
) -> str:
    """The stored front of ``stage`` as a table, with the title line ``show`` prints.

    ``macs_convention``: the MACs column's convention (:data:`~optuna_diffusion.macs.MACS_CONVENTIONS`).
    The search stores ``"full"`` MACs; in another, the front's plans are priced again on the study's
    model (loaded for counting, not run).
    """
    check_macs_convention(macs_convention)
    study = load_stage_study(config, storage_url, stage)
    storage = compat.storage_of(study)
    timestep_study = study if stage == TIMESTEP_STAGE else _load_or_none(storage, config.stage_study_name(TIMESTEP_STAGE))
    rows = pareto_front(study)
    fixed = study.user_attrs.get(FIXED_MACS_ATTR) or {}
    counted = ""
    if macs_convention != DEFAULT_MACS_CONVENTION:
        pricing = plan_macs_of(stored_config([study], study.study_name, config), macs_convention)
        rows = [dataclasses.replace(row, macs=pricing.total(row.plan)) for row in rows]
        fixed = {**pricing.per_image, "classifier_per_step": pricing.classifier_step}
        fixed = {name: macs for name, macs in fixed.items() if macs}
        counted = f"\n(GMACs counted as {macs_convention}: {MACS_CONVENTIONS[macs_convention]})"
    table = format_front(rows, limits=baseline_limits(timestep_study), max_fid=max_fid, show_all=show_all,
                         metric=metric_label(config), rescored=stored_rescore(study))
    parts = ", ".join(f"{name.replace('_', ' ')} {macs / 1e9:.4f}" for name, macs in fixed.items())
    included = f"\n(every row's GMACs include {parts})" if parts else ""
    settings = run_settings(study)
    return f"{study.study_name}: {len(study.trials)} trials\n{table}{included}{counted}" + (f"\n{settings}" if settings else "")


def plan_macs_of(config: StudyConfig, convention: str, *, device: str = "cpu") -> PlanMacs:
    """The :class:`PlanMacs` of ``config``'s model (with its classifier and prompts) in ``convention``."""
    from .models import load_diffusion_model

    model = load_diffusion_model(config.model.source, device=device, image_size=config.model.image_size)
    classifier = load_classifier(config.sampling.classifier, device=device) if config.sampling.classifier else None
    prompts = config.prompts.load() if model.prompt_encoder is not None else None
    return PlanMacs.for_model(model, config.sampling, classifier=classifier, prompts=prompts, convention=convention)


def run_settings(study: optuna.Study) -> str:
    """Where and in what precision the complete trials ran, and their peak accelerator memory (empty: none known).

    Trials of one study may have run on several machines or precisions (workers, resumed runs with
    another ``--dtype``): a front mixing them compares plans under different settings, which is said.
    """
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    counts = Counter(
        (str(t.user_attrs.get(DEVICE_ATTR, "an unrecorded device")), str(t.user_attrs.get(DTYPE_ATTR, "an unrecorded dtype")))
        for t in trials
    )
    if not counts:
        return ""
    lines = ["ran on: " + ", ".join(f"{n} trials on {device} in {dtype}" for (device, dtype), n in counts.most_common())]
    if len(counts) > 1:
        lines.append("warning: these trials ran under mixed devices or dtypes, so the front compares plans under different settings")
    peaks = sorted(int(t.user_attrs[PEAK_MEMORY_ATTR]) for t in trials if PEAK_MEMORY_ATTR in t.user_attrs)
    if peaks:
        lines.append(f"peak accelerator memory per trial: median {peaks[len(peaks) // 2] / 2**30:.2f} GiB, "
                     f"max {peaks[-1] / 2**30:.2f} GiB ({len(peaks)} trials measured)")
    return "\n".join(lines)


def stored_stage_studies(config: StudyConfig, storage_url: str, stage: str | None) -> list[optuna.Study]:
    """The studies ``export`` chooses from: ``stage``'s, or both stages' that exist."""
    if stage is not None:
        return [load_stage_study(config, storage_url, stage)]
    studies = []
    for name in STAGES:
        try:
            studies.append(load_stage_study(config, storage_url, name))
        except ConfigError:
            continue
    if not studies:
        raise ConfigError(f"no study {config.name!r} in {storage_url}; run optuna-diffusion optimize first")
    return studies


def stored_config(studies: list[optuna.Study], name: str, default: StudyConfig) -> StudyConfig:
    """The configuration study ``name`` ran with (its marker: model, solver ... as overridden), else ``default``."""
    for study in studies:
        data = read_marker(study.user_attrs).get(MARKER_CONFIG_KEY)
        if study.study_name == name and isinstance(data, dict):
            return StudyConfig.from_dict(data)
    return default


def choose_plan(
    studies: list[optuna.Study],
    *,
    max_macs: float | None = None,
    steps: int | None = None,
    trial_number: int | None = None,
) -> dict[str, Any]:
    """The plan a user asked for, with its scores and where it comes from.

    The lowest FID over ``studies`` (full-size evaluations only), optionally among plans with at most
    ``max_macs`` MACs and exactly ``steps`` time steps; or trial ``trial_number`` (one study only).
    The plan carries the solver its study ran (the study's ``[sampling] solver`` when it did not search one).
    """
    if trial_number is not None:
        if len(studies) != 1:
            raise ConfigError("--trial needs --stage: trial numbers are per stage")
        chosen = [t for t in studies[0].get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number == trial_number]
        if not chosen:
            raise ConfigError(f"study {studies[0].study_name!r} has no complete trial {trial_number}")
        study, trial = studies[0], chosen[0]
    else:
        candidates = [
            (study, t)
            for study in studies
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values and math.isfinite(t.values[0]) and not is_low_fidelity(t)
            if (max_macs is None or t.values[1] <= max_macs)
            if steps is None or ((plan := stored_plan(t)) is not None and plan.num_steps == steps)
        ]
        if not candidates:
            limits = ([f"at most {max_macs:g} MACs"] if max_macs is not None else []) + (
                [f"exactly {steps} steps"] if steps is not None else []
            )
            where = " and ".join(s.study_name for s in studies)
            raise ConfigError(f"{where} has no complete plan" + (f" with {' and '.join(limits)}" if limits else ""))
        study, trial = min(candidates, key=lambda pair: (pair[1].values[0], pair[1].values[1], pair[1].number))
    plan = plan_from_trial(trial)
    marker = read_marker(study.user_attrs)
    if plan.solver is None and isinstance(marker.get(MARKER_CONFIG_KEY), dict):
        # Every exported plan carries its solver, so apply(pipe, plan) sets the scheduler that runs it.
        solvers = StudyConfig.from_dict(marker[MARKER_CONFIG_KEY]).sampling.solvers(plan.schedule_kind)
        plan = dataclasses.replace(plan, solver=solvers[0])
    return {
        "plan": plan.to_dict(),
        "fid": trial.values[0],
        "macs": trial.values[1],
        "study": study.study_name,
        "stage": marker.get(MARKER_STAGE_KEY),
        "trial": trial.number,
    }


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


def dashboard_server(config: StudyConfig, storage_url: str, *, host: str = "127.0.0.1", port: int = 8080) -> Any:
    """optuna-dashboard on the study's storage and artifact store, bound to ``host:port`` (0: any free
    port) and ready for ``serve_forever()``; ``shutdown()`` stops it."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    check_stored(storage_url)
    directory = artifact_dir(storage_url, config.name)
    directory.mkdir(parents=True, exist_ok=True)
    app = wsgi(open_storage(storage_url), artifact_store=FileSystemArtifactStore(str(directory)))

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise in a terminal
            pass

    try:
        return make_server(host, port, app, handler_class=QuietHandler)
    except OSError as error:
        raise ConfigError(f"cannot serve the dashboard on {host}:{port}: {first_line(error)}") from None


def serve_dashboard(config: StudyConfig, storage_url: str, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run optuna-dashboard on the study's storage and artifact store (blocks until stopped)."""
    server = dashboard_server(config, storage_url, host=host, port=port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
