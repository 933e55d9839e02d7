"""Load a diffusion model for a study: a bundled name, a local diffusers folder, or a hub id.

A model is a denoiser -- a UNet (``UNet2DModel``, ``UNet2DConditionModel``) or a transformer
(``DiTTransformer2DModel`` ...) -- plus the config of its noise schedule, and the family that says
how to call it (:mod:`optuna_diffusion.families`). Folders may hold them as a pipeline (``unet/`` or
``transformer/`` and ``scheduler/`` sub-folders) or flat (the denoiser's ``config.json`` and
``scheduler_config.json`` side by side, as ``google/ddpm-*`` repositories do).

A folder or hub id whose ``model_index.json`` names a pipeline class of
:data:`~optuna_diffusion.families.PIPELINE_FAMILIES` (Stable Diffusion 1.x/2.x, SDXL, PixArt-alpha/Sigma,
SD3, Flux, DiT; the video pipelines Wan 2.1, CogVideoX and LTX-Video) is loaded whole with
``DiffusionPipeline.from_pretrained``: the model then keeps the pipeline, its VAE and text encoders, and a family that does what that pipeline does (see
:mod:`optuna_diffusion.families._pipeline`). Other pipelines (``DDPMPipeline`` ...) load their denoiser
alone, as before. This module decides what a source is and makes the model; reading and checking the
files is :mod:`optuna_diffusion.model_files`'.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, ModelLoadError, first_line
from .families import PIPELINE_FAMILIES, ModelFamily, family_for, family_for_pipeline
from .model_files import (
    DENOISER_FOLDERS,
    check_pipeline_files,
    check_weights,
    hub_model_index,
    load_denoiser,
    load_pipeline,
    read_model_index,
    subfolder_of,
)
from .pipelines import PromptEncoder
from .schedules import schedule_from_config
from .zoo import BUNDLED_MODELS, bundled_model_path


@dataclass
class DiffusionModel:
    """A denoiser, the config of the noise schedule it was trained with, and how to call it.

    Attributes:
        denoiser: the UNet or transformer that runs at every step.
        scheduler_config: its scheduler's config (DDPM-style betas, or flow matching).
        source: where it came from (for messages).
        family: how to call it (default: by the denoiser's class).
        vae: the decoder of a latent model (None: the denoiser works on pixels).
        pipeline: the diffusers pipeline it came from, when it came from one.
        prompt_encoder: for a text-to-image pipeline, its :class:`~optuna_diffusion.pipelines.PromptEncoder`
            (made when not given: text encoders run once per distinct prompt).
        image_size: ``(height, width)`` of the images a pipeline makes (None: the pipeline's default).
        num_frames: frames of the videos a video pipeline makes (None: the pipeline's default).
    """

    denoiser: nn.Module
    scheduler_config: dict[str, Any]
    source: str
    family: ModelFamily = field(default=None)  # type: ignore[assignment]
    vae: nn.Module | None = None
    pipeline: Any = None
    prompt_encoder: Any = None
    image_size: tuple[int, int] | None = None
    num_frames: int | None = None
    offloaded: bool = False
    """Whether the pipeline runs under diffusers' model CPU offload (components move to the accelerator per call)."""

    def __post_init__(self) -> None:
        if self.family is None:
            self.family = family_for_pipeline(self.pipeline) if self.pipeline is not None else family_for(self.denoiser)
        if self.image_size is not None:
            self.image_size = _image_size(self.image_size)
        if self.num_frames is not None:
            self.num_frames = _num_frames(self.num_frames, self)
        if self.prompt_encoder is None and self.family.uses_prompts:
            self.prompt_encoder = PromptEncoder(self)

    @property
    def schedule(self):
        """The noise schedule (:class:`~optuna_diffusion.schedules.NoiseSchedule` or ``FlowSchedule``)."""
        return schedule_from_config(self.scheduler_config)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample in the solver's space (``(C, H, W)`` of pixels or latents)."""
        return self.family.sample_shape(self)

    @property
    def num_class_embeds(self) -> int | None:
        return getattr(self.denoiser.config, "num_class_embeds", None)

    @property
    def device(self) -> torch.device:
        """Where the denoiser runs (with CPU offload: the accelerator its hooks move it to)."""
        execution = getattr(self.pipeline, "_execution_device", None) if self.offloaded else None
        return execution if execution is not None else next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The denoiser's parameter dtype: the precision of the solver's samples between steps."""
        return next(self.denoiser.parameters()).dtype


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` switches the Hugging Face hub off (read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _load_from_folder(folder: Path, device: str | torch.device, dtype: torch.dtype) -> DiffusionModel:
    denoiser_sub = subfolder_of(folder, DENOISER_FOLDERS, "config.json")
    subfolder_of(folder, ("scheduler",), "scheduler_config.json")
    check_weights(folder, denoiser_sub)
    try:
        denoiser, scheduler_config = load_denoiser(folder, denoiser_sub, dtype)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the model in {folder}: {first_line(error)}") from None
    return DiffusionModel(denoiser.to(device).eval().requires_grad_(False), scheduler_config, str(folder))


def _load_from_hub(repo_id: str, device: str | torch.device, dtype: torch.dtype, local_files_only: bool) -> DiffusionModel:
    last_error: Exception | None = None
    for subfolder in (*DENOISER_FOLDERS, None):
        try:
            denoiser, scheduler_config = load_denoiser(repo_id, subfolder, dtype, local_files_only=local_files_only)
        except (OSError, ValueError) as error:
            last_error = error
            continue
        return DiffusionModel(denoiser.to(device).eval().requires_grad_(False), scheduler_config, repo_id)
    where = "in the local Hugging Face cache" if local_files_only else "on the Hugging Face Hub or in its cache"
    raise ModelLoadError(
        f"model {repo_id!r} is not a bundled model ({', '.join(BUNDLED_MODELS)}), not a local folder, "
        f"and could not be loaded {where} ({first_line(last_error)}); download it where there is internet "
        f"(huggingface-cli download {repo_id} --local-dir DIR) and pass the folder instead"
    )


# Pipelines -------------------------------------------------------------------------------------------


def _image_size(value: Any) -> tuple[int, int]:
    size = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(size) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size):
        raise ConfigError(f"image_size must be a positive integer or (height, width), got {value!r}")
    return int(size[0]), int(size[1])


def _num_frames(value: Any, model: DiffusionModel) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"num_frames must be a positive integer, got {value!r}")
    if not getattr(model.family, "makes_video", False):
        raise ConfigError(f"num_frames applies to video pipelines; {model.source} makes images (unset num_frames)")
    return value


def _pipeline_class(model_index: dict[str, Any]) -> str | None:
    """The model index's pipeline class when optuna-diffusion runs it as a pipeline, else None."""
    name = model_index.get("_class_name")
    return name if name in PIPELINE_FAMILIES else None


def model_from_pipeline(
    pipeline: Any, *, source: str = "pipeline", image_size: Any = None, num_frames: int | None = None
) -> DiffusionModel:
    """A :class:`DiffusionModel` of a diffusers pipeline object (its denoiser, scheduler, VAE and family).

    Args:
        pipeline: a ``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``, ``PixArtAlphaPipeline``,
            ``PixArtSigmaPipeline``, ``StableDiffusion3Pipeline``, ``FluxPipeline`` or ``DiTPipeline``.
        source: where it came from (for messages).
        image_size: ``(height, width)`` (or one integer) of the images; None: the pipeline's default.
        num_frames: frames of a video pipeline's videos; None: the pipeline's default.
    """
    family = family_for_pipeline(pipeline)
    denoiser = getattr(pipeline, "unet", None)
    if denoiser is None:
        denoiser = getattr(pipeline, "transformer", None)
    if denoiser is None or getattr(pipeline, "vae", None) is None:
        raise ModelLoadError(f"the {type(pipeline).__name__} of {source} has no denoiser or no VAE")
    scheduler = pipeline.scheduler
    scheduler_config = {**dict(scheduler.config), "_class_name": type(scheduler).__name__}
    return DiffusionModel(
        denoiser, scheduler_config, source, family=family, vae=pipeline.vae, pipeline=pipeline, image_size=image_size,
        num_frames=num_frames,
    )


def _pipeline_model(
    where: str | Path, model_index: dict[str, Any], source: str, device: str | torch.device, dtype: torch.dtype,
    image_size: Any, offload: bool = False, num_frames: int | None = None, **hub: Any,
) -> DiffusionModel:
    pipeline = load_pipeline(where, model_index, source, device, dtype, offload, **hub)
    model = model_from_pipeline(pipeline, source=source, image_size=image_size, num_frames=num_frames)
    model.offloaded = offload
    return model


def load_diffusion_model(
    source: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
    image_size: int | tuple[int, int] | None = None,
    offload: bool = False,
    num_frames: int | None = None,
) -> DiffusionModel:
    """Load a denoiser and its noise schedule (or a whole pipeline) from a bundled name, a folder, or a hub id.

    Args:
        source: a bundled name (``"digits"`` ...), a path to a diffusers folder, or a Hugging Face hub id.
            A folder or repository with a ``model_index.json`` of a supported pipeline class (see
            :data:`~optuna_diffusion.families.PIPELINE_FAMILIES`) is loaded as that pipeline.
        device: where the denoiser (and the pipeline's other components) run.
        dtype: parameter dtype of the denoiser (and of the pipeline's other components).
        local_files_only: for hub ids, only look in the local cache. Defaults to ``HF_HUB_OFFLINE``.
        image_size: for pipelines, ``(height, width)`` (or one integer) of the images made; None: the
            pipeline's default (e.g. 512 for SD 1.5, 1024 for SDXL and Flux).
        offload: for pipelines on an accelerator, diffusers' ``enable_model_cpu_offload``: every component
            stays on the CPU and moves to ``device`` only while it runs (needs ``accelerate``). diffusers
            refuses it without an accelerator, so on the CPU it is a one-line error, as for a bare denoiser.
        num_frames: for video pipelines (Wan ...), frames of the videos made; None: the pipeline's default.

    Raises:
        ModelLoadError: one line naming what is missing and how to supply it.
    """
    if offload:
        _check_offload(device)
    folder = Path(model_location(source)).expanduser()
    if folder.is_dir():
        model_index = read_model_index(folder)
        if model_index is not None and _pipeline_class(model_index):
            check_pipeline_files(folder, model_index)
            label = source if source in BUNDLED_MODELS else str(folder)
            return _pipeline_model(folder, model_index, label, device, dtype, image_size, offload, num_frames)
        return _bare(_load_from_folder(folder, device, dtype), image_size, offload, num_frames)
    if source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1):
        raise ModelLoadError(f"model folder {source} does not exist")
    if local_files_only is None:
        local_files_only = hub_offline()
    model_index = hub_model_index(source, local_files_only)
    if model_index is not None and _pipeline_class(model_index):
        return _pipeline_model(source, model_index, source, device, dtype, image_size, offload, num_frames,
                               local_files_only=local_files_only)
    return _bare(_load_from_hub(source, device, dtype, local_files_only), image_size, offload, num_frames)


def model_location(source: str) -> str:
    """Where ``source`` is read from: a bundled name's folder inside the package, else ``source`` itself."""
    return str(bundled_model_path(source)) if source in BUNDLED_MODELS else source


def pipeline_index_of(source: str) -> dict[str, Any] | None:
    """The ``model_index.json`` of ``source`` when optuna-diffusion runs it as a pipeline, else None.

    None for a bare denoiser (bundled or in a folder), or a hub id whose index is not in the local cache.
    """
    folder = Path(model_location(source)).expanduser()
    model_index = read_model_index(folder) if folder.is_dir() else hub_model_index(source, local_files_only=True)
    return model_index if model_index is not None and _pipeline_class(model_index) else None


def _bare(model: DiffusionModel, image_size: Any, offload: bool = False, num_frames: Any = None) -> DiffusionModel:
    if num_frames is not None:
        raise ConfigError(f"num_frames applies to video pipelines; {model.source} is a bare image denoiser")
    if image_size is not None:
        raise ConfigError(f"image_size applies to pipelines; {model.source} is a bare denoiser of fixed size")
    if offload:
        raise ConfigError(f"model.offload applies to pipelines; {model.source} is a bare denoiser (set offload = false)")
    return model


def _check_offload(device: str | torch.device) -> None:
    """One line when ``enable_model_cpu_offload`` cannot run: no accelerator, or no ``accelerate``."""
    if torch.device(device).type == "cpu":
        raise ConfigError(
            "model.offload moves components between the CPU and an accelerator, but this run's device is the CPU "
            "(diffusers refuses it without one): set offload = false, or run on cuda / mps"
        )
    if importlib.util.find_spec("accelerate") is None:
        raise ConfigError("model.offload needs the accelerate package (pip install accelerate), as diffusers' offload does")
