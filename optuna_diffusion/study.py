"""A study's pieces: its evaluator (model, FID network, reference), its stage studies, its previews.

Stage 1 (``NAME-timesteps``) and stage 2 (``NAME-architecture``) are separate Optuna studies in one
storage, so they can be compared side by side; each is marked as ours (:data:`MARKER`), and each
trial uploads a PNG grid of its samples as an artifact for optuna-dashboard.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch

from .devices import resolve_device, torch_dtype
from .errors import ConfigError
from .evaluation import Evaluation, PlanEvaluator, default_cache_dir
from .fid import inception_unavailable, load_feature_extractor
from .fitness import ClipScoreFitness, FIDFitness, FitnessMeter, TeacherFitness, TeacherStore
from .fitness._teacher import LABELS
from .image_folder import load_image_folder
from .macs import check_macs_convention
from .models import hub_offline, load_diffusion_model
from .plan import Plan
from .preview import save_image_grid
from .reference_stats import load_reference_npz, reference_stats
from .study_config import StudyConfig
from .trial_plan import MARKER_STAGE_KEY, study_marker
from .trial_plan import STUDY_MARKER as MARKER
from .zoo import BUNDLED_MODELS, BUNDLED_REFERENCES, bundled_reference_images
from .zoo.adm_classifier import ADMClassifier

PREVIEW_SAMPLES = 64


def missing_inputs(config: StudyConfig) -> list[str]:
    """What the study needs and this machine lacks, each with how to supply it (empty: nothing)."""
    hints = config.hints
    missing = []

    def need(what: str, option: str, value: str | None, hint: str) -> None:
        if value == "":
            missing.append(f"{what} ({option}{'; ' + hint if hint else ''})")
        elif value is not None and value not in BUNDLED_REFERENCES and value.startswith((".", "/", "~")) and not Path(value).expanduser().exists():
            missing.append(f"{what}: {value} does not exist ({option}{'; ' + hint if hint else ''})")

    need("the model", "--model DIR", config.model.source, hints.model)
    need("the classifier", "--classifier DIR", config.sampling.classifier, hints.classifier)
    if "fid" in config.fitness.metrics:
        need("the reference statistics", "--reference NPZ", config.fid.reference, hints.reference)
        if config.fid.features == "inception":
            problem = inception_unavailable(config.fid.feature_weights)
            if problem:
                missing.append(problem)
    clip = config.fitness.clip_model
    if "clip-score" in config.fitness.metrics and clip and not Path(clip).expanduser().is_dir():
        missing.append(f"the CLIP model: {clip} does not exist (fitness.clip_model, a folder with a CLIPModel and its processor)")
    # A hub id not in the local cache is downloaded when there is internet: named as missing only when the
    # study fails anyway, or when the hub is switched off (HF_HUB_OFFLINE).
    if (missing or hub_offline()) and _uncached_hub_id(config.model.source):
        hint = f"; {hints.model}" if hints.model else ""
        missing.insert(0, f"the model {config.model.source} (not in the local Hugging Face cache{hint})")
    return missing


def _uncached_hub_id(source: str) -> bool:
    """Whether ``source`` names a hub repository that the local Hugging Face cache does not hold."""
    from huggingface_hub import try_to_load_from_cache

    if not source or source in BUNDLED_MODELS or Path(source).expanduser().exists() or source.count("/") != 1:
        return False
    files = ("model_index.json", "config.json", "unet/config.json", "transformer/config.json")
    return not any(isinstance(try_to_load_from_cache(source, name), str) for name in files)


def build_evaluator(
    config: StudyConfig, *, device: str = "cpu", teacher_dir: Path | None = None, macs_convention: str = "full"
) -> PlanEvaluator:
    """Load the model, classifier and fitness (feature network and reference statistics, CLIP, or teacher) of ``config``.

    Everything missing is named in one line first, each with how to supply it. ``teacher_dir``: where
    teacher outputs are kept (default: ``teacher/`` in the user cache, :func:`default_cache_dir`); the
    runner passes the study's artifact folder. With ``[fitness] rescore``, the re-scoring metric is
    bound too, as the evaluator's ``rescore_fitness``. ``macs_convention``: what the evaluator's MACs
    count (:data:`~optuna_diffusion.macs.MACS_CONVENTIONS`).
    """
    check_macs_convention(macs_convention)

    device = str(resolve_device(device))
    missing = missing_inputs(config)
    if missing:
        raise ConfigError(f"study {config.name!r} needs {'; '.join(missing)}")
    reference = Path(config.fid.reference).expanduser()
    if "fid" in config.fitness.metrics and config.fid.reference not in BUNDLED_REFERENCES and not (reference.is_file() or reference.is_dir()):
        raise ConfigError(f"reference statistics file {config.fid.reference} does not exist (--reference: an .npz or an image folder)")
    meters = {metric: make_fitness(metric, config, device=device, teacher_dir=teacher_dir) for metric in config.fitness.metrics}
    model = load_diffusion_model(
        config.model.source, device=device, dtype=torch_dtype(config.model.dtype), image_size=config.model.image_size,
        num_frames=config.model.num_frames, offload=config.model.offload,
    )
    # The classifier of classifier guidance stays in float32 whatever the model's dtype: its input gradient is
    # taken in float32 (generation.classifier_gradient), and it is small next to the denoiser.
    classifier = load_classifier(config.sampling.classifier, device=device) if config.sampling.classifier else None
    prompts = config.prompts.load() if model.prompt_encoder is not None else None
    cache_bytes = int(config.sampling.prefix_cache_mb * 2**20)
    evaluator = PlanEvaluator(
        model, config.sampling, prefix_cache=cache_bytes, classifier=classifier, prompts=prompts,
        fitness=meters[config.fitness.metric], macs_convention=macs_convention,
    )
    try:
        evaluator.rescore_fitness = evaluator.bind(meters[config.fitness.rescore]) if config.fitness.rescore else None
        evaluator.release_text_encoders()  # the study's prompts are encoded once; the search never needs them again
    except BaseException:
        evaluator.close()
        raise
    return evaluator


def make_fitness(metric: str, config: StudyConfig, *, device: str = "cpu", teacher_dir: Path | None = None) -> FitnessMeter:
    """The (unbound) meter of ``metric`` as ``config`` sets it up."""
    settings = config.fitness
    if metric == "teacher":
        folder = teacher_dir if teacher_dir is not None else default_cache_dir() / "teacher"
        return TeacherFitness(settings.teacher_distance, steps=settings.teacher_steps, store=TeacherStore(folder))
    if metric == "clip-score":
        return ClipScoreFitness(settings.clip_model or "")
    extractor = load_feature_extractor(config.fid.features, weights_path=config.fid.feature_weights).to(device)
    if config.fid.reference in BUNDLED_REFERENCES:
        reference = reference_stats(bundled_reference_images(config.fid.reference), extractor, cache_dir=default_cache_dir())
    elif Path(config.fid.reference).expanduser().is_dir():
        images = load_image_folder(config.fid.reference)
        reference = reference_stats(images, extractor, cache_dir=default_cache_dir())
    else:
        reference = load_reference_npz(config.fid.reference)
    return FIDFitness(reference, extractor)


def load_classifier(folder: str, *, device: str = "cpu") -> torch.nn.Module:
    """The noisy-image classifier of classifier guidance, from a folder ``zoo convert-adm-classifier`` wrote."""
    return ADMClassifier.from_pretrained(Path(folder).expanduser()).to(device).eval().requires_grad_(False)


def metric_label(config: StudyConfig) -> str:
    """Name of a study's first objective: ``FID``, or the fitness metric's value (``-PSNR``, ``-CLIP score`` ...)."""
    metric = config.fitness.metric
    return {"fid": "FID", "clip-score": "-CLIP score"}.get(metric) or LABELS[config.fitness.teacher_distance]


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
        study.set_metric_names([metric_label(config), "MACs"])
        study.set_user_attr(MARKER, study_marker(stage, config.to_dict()))
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
    if not isinstance(marker, dict) or marker.get(MARKER_STAGE_KEY) != stage:
        raise foreign
    if not minimizes_two:
        raise ConfigError(f"study {name!r} has directions {[d.name for d in directions]}; optuna-diffusion studies minimize 2 objectives")


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


def completed_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
