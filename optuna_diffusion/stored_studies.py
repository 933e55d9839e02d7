"""Queries of stored studies: the front ``show`` prints, the plan ``export`` chooses, the configuration a study ran with."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any

import optuna
from optuna.trial import TrialState

from . import compat
from .errors import ConfigError
from .evaluation import PlanMacs
from .front import baseline_limits, format_front, pareto_front
from .macs import DEFAULT_MACS_CONVENTION, MACS_CONVENTIONS, check_macs_convention
from .rescore import stored_rescore
from .storage import check_stored, open_storage
from .study import load_classifier, metric_label
from .study_config import StudyConfig
from .trial_plan import (
    DEVICE_ATTR,
    DTYPE_ATTR,
    FIXED_MACS_ATTR,
    MARKER_CONFIG_KEY,
    MARKER_STAGE_KEY,
    PEAK_MEMORY_ATTR,
    STAGES,
    TIMESTEP_STAGE,
    is_low_fidelity,
    plan_from_trial,
    read_marker,
    stored_plan,
)


def load_or_none(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


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
    timestep_study = study if stage == TIMESTEP_STAGE else load_or_none(storage, config.stage_study_name(TIMESTEP_STAGE))
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

    model = load_diffusion_model(config.model.source, device=device, image_size=config.model.image_size,
                                  num_frames=config.model.num_frames)
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


