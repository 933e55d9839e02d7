"""Run a study's two stages on an Optuna storage: resumable, multi-worker, dashboard-ready.

Stage 1 (``NAME-timesteps``) and stage 2 (``NAME-architecture``) are separate Optuna studies in one
storage, so they can be compared side by side. Trials are counted globally across workers
(``MaxTrialsCallback``), a trial cut off by a crash is retried (RDB heartbeat +
``RetryHeartbeatStaleTrialCallback``), and each trial uploads a PNG grid of its samples as an
artifact for optuna-dashboard.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from .errors import ConfigError, OptunaDiffusionError, first_line
from .evaluation import Evaluation, PlanEvaluator, default_cache_dir
from .plan import Plan
from .preview import save_image_grid
from .study_config import StudyConfig
from .trial_plan import STUDY_MARKER as MARKER
from .trial_plan import plan_from_trial

STAGES = ("timesteps", "architecture")
PREVIEW_SAMPLES = 64


def default_storage_url(config: StudyConfig) -> str:
    """A SQLite file named after the study, in the working directory."""
    return f"sqlite:///{config.name}.db"


def artifact_dir(storage_url: str, config: StudyConfig) -> Path:
    """Where trial images go: next to a SQLite or journal file, else ``./NAME-artifacts``."""
    if storage_url.startswith("sqlite:///"):
        return Path(storage_url[len("sqlite:///") :]).with_suffix("").with_name(f"{config.name}-artifacts")
    return Path(f"{config.name}-artifacts")


def open_storage(url: str, *, heartbeat_interval: int = 30) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: an RDB URL (heartbeat + retry of stale trials) or a journal file path."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat_interval,
            grace_period=heartbeat_interval * 3,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
            engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
        )
    except Exception as error:  # SQLAlchemy raises many kinds; all mean the same to the user
        raise ConfigError(f"cannot open storage {_redacted(url)}: {first_line(error)}") from None


def _redacted(url: str) -> str:
    """``url`` without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def check_device(device: str) -> torch.device:
    """``device`` as a torch device that exists on this machine, else a one-line error."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r} (try cpu or cuda)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU here")
    return parsed


def build_evaluator(config: StudyConfig, *, device: str = "cpu") -> PlanEvaluator:
    """Load the model, feature network and reference statistics of ``config`` (missing inputs: one line)."""
    from .fid import load_feature_extractor, load_reference_npz, reference_stats
    from .models import load_diffusion_model

    check_device(device)
    if not config.model.source:
        raise ConfigError(
            f"study {config.name!r} needs a model: pass --model with a diffusers folder or hub id"
            + (" (convert guided-diffusion's checkpoint with: optuna-diffusion zoo convert-adm)" if "imagenet" in config.name else "")
        )
    if not config.fid.reference:
        raise ConfigError(f"study {config.name!r} needs reference statistics: pass --reference with an .npz holding mu and sigma")
    if config.fid.reference != "digits" and not Path(config.fid.reference).is_file():
        raise ConfigError(f"reference statistics file {config.fid.reference} does not exist (--reference)")
    extractor = load_feature_extractor(config.fid.features, weights_path=config.fid.feature_weights)
    model = load_diffusion_model(config.model.source, device=device)
    if config.fid.reference == "digits":
        from .zoo.data import load_digits_images

        images, _ = load_digits_images()
        reference = reference_stats(images, extractor, cache_dir=default_cache_dir())
    else:
        reference = load_reference_npz(config.fid.reference)
    cache_bytes = int(config.sampling.prefix_cache_mb * 2**20)
    return PlanEvaluator(model, config.sampling, extractor.to(device), reference, prefix_cache=cache_bytes)


def open_study(config: StudyConfig, stage: str, storage: optuna.storages.BaseStorage, sampler: Any = None) -> optuna.Study:
    """Create or resume the study of ``stage``; refuse a same-named study made by another tool."""
    name = config.stage_study_name(stage)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        study_id = None
    if study_id is not None:
        _check_ours(storage, study_id, name, stage)
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, directions=["minimize", "minimize"], load_if_exists=True
    )
    if MARKER not in study.user_attrs:
        study.set_metric_names(["FID", "MACs"])
        study.set_user_attr(MARKER, {"stage": stage, "config": config.to_dict()})
    return study


def _check_ours(storage: optuna.storages.BaseStorage, study_id: int, name: str, stage: str) -> None:
    """Refuse a study made by another tool; accept one of ours, or an empty one another worker is creating.

    Creating a study and marking it are two storage calls, so a worker starting at the same moment
    as another can see the study before its marker; an empty study holds nothing to spoil. Our
    workers mark a study before they add a trial to it, so the trials are counted BEFORE the
    attributes are read: a study that had trials then and has no marker now is foreign. (Read in
    the other order, a worker could see no marker yet and then the first trial of the one marking it.)
    """
    foreign = ConfigError(f"study {name!r} in this storage was not created by optuna-diffusion; choose another study name")
    has_trials = storage.get_n_trials(study_id) > 0
    user_attrs = storage.get_study_user_attrs(study_id)
    directions = storage.get_study_directions(study_id)
    minimizes_two = directions == [optuna.study.StudyDirection.MINIMIZE] * 2
    if not user_attrs and not has_trials:
        if not minimizes_two:
            raise foreign
        return
    marker = user_attrs.get(MARKER)
    if not isinstance(marker, dict) or marker.get("stage") != stage:
        raise foreign
    if not minimizes_two:
        raise ConfigError(f"study {name!r} has directions {[d.name for d in directions]}; optuna-diffusion studies minimize 2 objectives")


def stored_config(study: optuna.Study) -> StudyConfig:
    """The StudyConfig a study was created with."""
    marker = study.user_attrs.get(MARKER)
    if not isinstance(marker, dict) or "config" not in marker:
        raise ConfigError(f"study {study.study_name!r} was not created by optuna-diffusion")
    return StudyConfig.from_dict(marker["config"])


class PreviewUploader:
    """Uploads a PNG grid of a trial's first samples as an Optuna artifact (shown by optuna-dashboard).

    Use it as a :class:`~optuna_diffusion.objective.PlanObjective`'s ``after_evaluation`` with
    ``keep_images=PREVIEW_SAMPLES``: the images are those the FID was computed from.
    """

    def __init__(self, directory: Path) -> None:
        from optuna.artifacts import FileSystemArtifactStore

        directory.mkdir(parents=True, exist_ok=True)
        self.store = FileSystemArtifactStore(str(directory))

    def __call__(self, trial: optuna.Trial, plan: Plan, evaluation: Evaluation) -> None:
        from optuna.artifacts import upload_artifact

        images = evaluation.images
        if images is None or not torch.isfinite(images).all():
            return
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"trial-{trial.number}-samples.png"
            save_image_grid(images, path)
            upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial, mimetype="image/png")


@dataclass(frozen=True)
class FrontRow:
    """One Pareto-optimal trial, for tables."""

    number: int
    fid: float
    macs: float
    plan: Plan


def pareto_front(study: optuna.Study) -> list[FrontRow]:
    """The study's Pareto-optimal complete trials with their plans, by MACs."""
    rows = []
    for trial in study.best_trials:
        if trial.values is None or not all(math.isfinite(v) for v in trial.values):
            continue
        rows.append(FrontRow(trial.number, trial.values[0], trial.values[1], plan_from_trial(trial)))
    return sorted(rows, key=lambda row: (row.macs, row.fid))


def format_front(rows: list[FrontRow]) -> str:
    """The Pareto front as a text table (steps, time steps, MACs, FID)."""
    lines = [f"{'trial':>6} {'steps':>5} {'GMACs':>9} {'FID':>8}  plan"]
    for row in rows:
        lines.append(f"{row.number:>6} {row.plan.num_steps:>5} {row.macs / 1e9:9.4f} {row.fid:8.3f}  {row.plan}")
    return "\n".join(lines)


def completed_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


__all__ = [
    "FrontRow",
    "OptunaDiffusionError",
    "PreviewUploader",
    "STAGES",
    "artifact_dir",
    "build_evaluator",
    "default_storage_url",
    "format_front",
    "open_storage",
    "open_study",
    "pareto_front",
    "stored_config",
]
