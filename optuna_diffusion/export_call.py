"""The export layer's pipeline call: the Python call that runs a study's plan in the study's pipeline,
checked at export (what ``export --out plan.json`` writes beside the plan as ``plan.py``).

It sits above the loader and the study config, which it reads; the call templates themselves are
:func:`~optuna_diffusion.pipelines.pipeline_call` (the pipeline helpers import nothing above them).
"""

from __future__ import annotations

from typing import Any

import diffusers

from .errors import ConfigError
from .generation import class_labels
from .models import model_location, pipeline_index_of
from .pipelines import FAMILY_OF_PIPELINE, pipeline_call, pipeline_schedule_kwargs, scheduler_for_solver
from .plan import Plan
from .schedules import schedule_from_config
from .study_config import StudyConfig


def first_batch_size(config: StudyConfig, stage: str, solver: str, family: str) -> int:
    """How many of a study's first samples ``plan.py`` makes: up to 4, or the whole first batch under ``ddpm``
    (its step noise is drawn per batch), at most 64 for DiT (its generator draws the first noise chunk)."""
    num_samples = getattr(config, stage).num_samples
    count = min(config.sampling.batch_size, num_samples)
    if solver != "ddpm":
        count = min(count, 4)
    return min(count, 64) if family == "dit" else count


def _flux_mu(source: str, scheduler: Any, image_size: int) -> float:
    """The ``mu`` ``FluxPipeline`` computes at ``image_size`` (its VAE's factor read from the folder's config)."""
    vae = diffusers.AutoencoderKL.load_config(model_location(source), subfolder="vae", local_files_only=True)
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    tokens = (image_size // factor // 2) ** 2  # latents cut into 2 x 2 patches
    return schedule_from_config({**scheduler.config, "_class_name": type(scheduler).__name__}).mu_for(tokens)


def study_pipeline_call(config: StudyConfig, plan: Plan, plan_file: str, *, stage: str = "timesteps") -> str | None:
    """The call that runs ``plan`` in the study's pipeline, checked now; None when the model is no pipeline.

    It makes the study's first samples of ``stage`` (:func:`first_batch_size` of them) as the study
    scored them: their prompts or class labels, the study's image size, initial noise and generator.
    The check is the one the call makes at run time, done at export: the study's (or the plan's) solver
    must be one a diffusers scheduler runs (:func:`~optuna_diffusion.pipelines.scheduler_for_solver`),
    and that scheduler must accept the plan's time steps (:func:`pipeline_schedule_kwargs` runs its
    ``set_timesteps``). Under Flux's dynamic shifting the sigmas depend on ``mu``, which the call computes
    from the image size: checked with the ``mu`` of the study's ``[model] image_size``, or when it runs
    at the pipeline's default size.

    Raises:
        ConfigError: the plan cannot run in the pipeline (one line saying why).
    """
    source = config.model.source
    index = pipeline_index_of(source)
    if index is None:
        return None
    pipeline_class = index["_class_name"]
    family = FAMILY_OF_PIPELINE.get(pipeline_class)
    _, scheduler_class = index["scheduler"]
    scheduler = getattr(diffusers, scheduler_class).from_pretrained(
        model_location(source), subfolder="scheduler", local_files_only=True
    )
    solver = plan.solver or config.sampling.solvers(schedule_from_config(scheduler.config).kind)[0]
    runner = scheduler_for_solver(solver, scheduler)
    if family == "dit":
        runner.set_timesteps(timesteps=list(plan.timesteps))
    elif not getattr(runner.config, "use_dynamic_shifting", False):
        pipeline_schedule_kwargs(plan.timesteps, runner, solver=solver)
    elif family == "flux" and config.model.image_size is not None:
        pipeline_schedule_kwargs(plan.timesteps, runner, solver=solver, mu=_flux_mu(source, runner, config.model.image_size))
    count = first_batch_size(config, stage, solver, family)
    sampling = config.sampling
    if family == "dit":
        if solver == "ddpm":
            raise ConfigError(
                "DiTPipeline draws the ddpm solver's step noise from the generator of its initial noise, so no call "
                "of it makes a ddpm study's samples; run the plan with optuna-diffusion evaluate"
            )
        num_samples = getattr(config, stage).num_samples
        labels = class_labels(sampling.seed, num_samples, sampling.num_classes, sampling.labels)[:count].tolist()
        return pipeline_call(pipeline_class, source=source, solver=solver, guidance_scale=sampling.guidance_scale,
                             class_labels=tuple(labels), seed=sampling.seed, plan_file=plan_file)
    prompts = config.prompts.load()
    negatives = prompts.negatives(0, count)
    if family == "flux" or all(negative is None for negative in negatives):
        negatives = None  # the pipeline's default unconditional pass (Flux runs none)
    elif any(negative is None for negative in negatives):
        raise ConfigError(
            "the study's first prompts mix negative prompts and none (the pipeline's default), which one pipeline "
            "call cannot do; give every prompt a negative prompt ([prompts] negative_prompt)"
        )
    return pipeline_call(
        pipeline_class, source=source, solver=solver, guidance_scale=sampling.guidance_scale,
        prompts=tuple(prompts.texts(0, count)), negative_prompts=None if negatives is None else tuple(negatives),
        image_size=config.model.image_size, seed=sampling.seed, plan_file=plan_file,
    )
