"""The run loop of ``optimize``: run or resume the stages of a study, and what happens when a run fails.

The other commands' work lives beside it: the population recipe and samplers in
:mod:`~optuna_diffusion.population`, queries of stored studies in :mod:`~optuna_diffusion.stored_studies`,
one-off evaluations in :mod:`~optuna_diffusion.one_off`, the dashboard in :mod:`~optuna_diffusion.dashboard`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from . import compat, faults
from .baselines import baseline_names, baseline_plan
from .budget import TrialBudget
from .devices import resolve_device
from .errors import ConfigError, OptunaDiffusionError, StorageError, first_line
from .evaluation import PlanEvaluator
from .fidelity import FidelityPolicy
from .front import baseline_limits, format_front, pareto_front
from .objective import PlanObjective
from .population import sampler_for, shift_mu, study_population
from .rescore import rescore_front, stored_rescore
from .sensitivity import Sensitivity, anchor_plan, probe_sensitivity, single_changes
from .storage import artifact_dir, check_storage_url, open_storage, redacted, remove_created, storage_files
from .stored_studies import load_or_none
from .study import PREVIEW_SAMPLES, PreviewUploader, build_evaluator, completed_trials, metric_label, open_study
from .study_config import StudyConfig
from .trial_plan import (
    ARCHITECTURE_STAGE,
    BASELINE_FIDS_ATTR,
    FIXED_MACS_ATTR,
    SENSITIVITY_ATTR,
    STAGES,
    TIMESTEP_STAGE,
    is_low_fidelity,
    stored_plan,
)

Echo = Callable[[str], None]

_STORAGE_FAILURES = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, optuna.exceptions.StorageInternalError)
"""What a database that went away raises through Optuna."""


def check_macs_budget(budget: float | None, evaluator: PlanEvaluator) -> None:
    """Raise ConfigError if ``budget`` is below the cheapest plan (:meth:`PlanEvaluator.cheapest_step_macs`)."""
    if budget is not None and budget < evaluator.cheapest_step_macs():
        raise ConfigError(
            f"architecture.macs_budget = {budget:g} MACs is below the cheapest possible plan "
            f"({evaluator.cheapest_step_macs():g} MACs: one step with every skippable block skipped)"
        )


def stage2_sensitivity(
    config: StudyConfig, storage: optuna.storages.BaseStorage, evaluator: PlanEvaluator, echo: Echo
) -> Sensitivity | None:
    """The probes stage 2 is steered by: those stored on its study, else measured now on stage 1's anchor plan.

    None when ``[architecture] probe_samples`` is 0 or stage 1 has no complete plan yet."""
    if not config.architecture.probe_samples:
        return None
    samples = min(config.architecture.probe_samples, config.architecture.num_samples)
    study = load_or_none(storage, config.stage_study_name(ARCHITECTURE_STAGE))
    if study is not None and SENSITIVITY_ATTR in study.user_attrs:
        return Sensitivity.from_dict(study.user_attrs[SENSITIVITY_ATTR])
    source = load_or_none(storage, config.stage_study_name(TIMESTEP_STAGE))
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
    resolve_device(device)  # a one-line error for a device this machine lacks, before the storage opens
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
    timestep_study = study if stage == TIMESTEP_STAGE else load_or_none(storage, config.stage_study_name(TIMESTEP_STAGE))
    if stage == TIMESTEP_STAGE and complete >= budget.total:
        record_baseline_fids(study, config, evaluator)
    if evaluator.rescore_fitness is not None and complete >= budget.total:
        samples = config.fitness.rescore_samples or getattr(config, stage).num_samples
        rescore_front(study, evaluator, num_samples=samples, timestep_study=timestep_study, echo=echo)
    echo(format_front(pareto_front(study), limits=baseline_limits(timestep_study), show_all=show_all,
                      metric=metric_label(config), rescored=stored_rescore(study)))
    echo(f"stored in {where} as study {study.study_name!r}")
    return study


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


