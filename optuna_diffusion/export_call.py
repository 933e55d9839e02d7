"""The export layer's pipeline call: the Python call that runs a study's plan in the study's pipeline,
checked at export (what ``export --out plan.json`` writes beside the plan as ``plan.py``).

It sits above the loader, the families and the study config, which it reads: each pipeline family
owns the template of its call (:class:`~optuna_diffusion.pipelines.CallTemplate`, its
``call_template``), found here by pipeline class (:data:`~optuna_diffusion.families.PIPELINE_FAMILIES`).
"""

from __future__ import annotations

from typing import Any

import diffusers

from .errors import ConfigError
from .families import PIPELINE_FAMILIES, ModelFamily
from .generation import class_labels
from .models import model_location, pipeline_index_of
from .pipelines import CallTemplate, scheduler_for_solver
from .plan import Plan
from .schedules import schedule_from_config
from .study_config import StudyConfig


def exporting_family(pipeline_class: str) -> tuple[ModelFamily, CallTemplate]:
    """The family of ``pipeline_class`` and the template of its call.

    Raises:
        ConfigError: export writes no call for that pipeline class.
    """
    family = PIPELINE_FAMILIES.get(pipeline_class)
    if family is None or family.call_template is None:
        known = ", ".join(name for name, family in PIPELINE_FAMILIES.items() if family.call_template is not None)
        raise ConfigError(f"no pipeline call for a {pipeline_class}; export knows {known}")
    return family, family.call_template


def pipeline_call(pipeline_class: str, **values: Any) -> str:
    """The Python code that runs an exported plan with ``pipeline_class``: its family's template rendered
    with ``values`` (see :meth:`~optuna_diffusion.pipelines.CallTemplate.render`)."""
    return exporting_family(pipeline_class)[1].render(pipeline_class, **values)


def first_batch_size(config: StudyConfig, stage: str, solver: str, template: CallTemplate) -> int:
    """How many of a study's first samples ``plan.py`` makes: up to 4, or the whole first batch under ``ddpm``
    (its step noise is drawn per batch), at most the template's ``max_first_samples`` (DiT: 64, its
    generator draws the first noise chunk)."""
    num_samples = getattr(config, stage).num_samples
    count = min(config.sampling.batch_size, num_samples)
    if solver != "ddpm":
        count = min(count, 4)
    return count if template.max_first_samples is None else min(count, template.max_first_samples)


def shift_mu(source: str, scheduler: Any, image_size: int, patch: int) -> float:
    """The ``mu`` a pipeline computes at ``image_size`` from its latent tokens, one per ``patch`` x ``patch``
    latent pixels (the VAE's factor read from the folder's config)."""
    vae = diffusers.AutoencoderKL.load_config(model_location(source), subfolder="vae", local_files_only=True)
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    tokens = (image_size // factor // patch) ** 2
    return schedule_from_config({**scheduler.config, "_class_name": type(scheduler).__name__}).mu_for(tokens)


def _check_schedule(template: CallTemplate, plan: Plan, runner: Any, solver: str, config: StudyConfig) -> None:
    """Set the plan's time steps on the call's scheduler as the call will (raises what it would raise)."""
    if template.patches_scheduler or not getattr(runner.config, "use_dynamic_shifting", False):
        template.set_timesteps(runner, plan.timesteps, solver=solver)
    elif template.shift_patch is not None and config.model.image_size is not None:
        mu = shift_mu(config.model.source, runner, config.model.image_size, template.shift_patch)
        template.set_timesteps(runner, plan.timesteps, solver=solver, mu=mu)


def study_pipeline_call(config: StudyConfig, plan: Plan, plan_file: str, *, stage: str = "timesteps") -> str | None:
    """The call that runs ``plan`` in the study's pipeline, checked now; None when the model is no pipeline.

    It makes the study's first samples of ``stage`` (:func:`first_batch_size` of them) as the study
    scored them: their prompts or class labels, the study's image size, initial noise and generator.
    The check is the one the call makes at run time, done at export: the study's (or the plan's) solver
    must be one a diffusers scheduler runs (:func:`~optuna_diffusion.pipelines.scheduler_for_solver`),
    and that scheduler must accept the plan's time steps (:meth:`CallTemplate.set_timesteps` hands them
    over as the call does). Where dynamic shifting makes the sigmas depend on a ``mu`` the call computes from
    the image size (Flux), it is checked with the ``mu`` of the study's ``[model] image_size``, or when it
    runs at the pipeline's default size.

    Raises:
        ConfigError: the plan cannot run in the pipeline (one line saying why).
    """
    source = config.model.source
    index = pipeline_index_of(source)
    if index is None:
        return None
    pipeline_class = index["_class_name"]
    family, template = exporting_family(pipeline_class)
    _, scheduler_class = index["scheduler"]
    scheduler = getattr(diffusers, scheduler_class).from_pretrained(
        model_location(source), subfolder="scheduler", local_files_only=True
    )
    solver = plan.solver or config.sampling.solvers(schedule_from_config(scheduler.config).kind)[0]
    _check_schedule(template, plan, scheduler_for_solver(solver, scheduler), solver, config)
    if solver == "ddpm" and template.ddpm_refusal is not None:
        raise ConfigError(template.ddpm_refusal)
    count = first_batch_size(config, stage, solver, template)
    sampling = config.sampling
    common = {"source": source, "solver": solver, "guidance_scale": sampling.guidance_scale, "seed": sampling.seed,
              "plan_file": plan_file}
    if not family.uses_prompts:
        num_samples = getattr(config, stage).num_samples
        labels = class_labels(sampling.seed, num_samples, sampling.num_classes, sampling.labels)[:count].tolist()
        return template.render(pipeline_class, class_labels=tuple(labels), **common)
    prompts = config.prompts.load()
    negatives = prompts.negatives(0, count)
    if not template.negative_prompts or all(negative is None for negative in negatives):
        negatives = None  # the pipeline's default unconditional pass (Flux runs none)
    elif any(negative is None for negative in negatives):
        raise ConfigError(
            "the study's first prompts mix negative prompts and none (the pipeline's default), which one pipeline "
            "call cannot do; give every prompt a negative prompt ([prompts] negative_prompt)"
        )
    return template.render(
        pipeline_class, prompts=tuple(prompts.texts(0, count)),
        negative_prompts=None if negatives is None else tuple(negatives), image_size=config.model.image_size,
        num_frames=config.model.num_frames, **common,
    )
