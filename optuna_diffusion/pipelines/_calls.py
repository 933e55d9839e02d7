"""The Python call that runs an exported plan in its diffusers pipeline, one template per family.

``export --out plan.json`` writes it beside the plan (``plan.py``) for a pipeline study, and the
reference page (docs/reference.md) shows each family's call rendered with example values;
``tests/test_reference_snippets.py`` runs those blocks and checks that they are exactly
:func:`pipeline_call`'s output, so the page and the exported files cannot drift apart. Every call makes the same three moves: the scheduler that runs
the study's solver (:func:`~optuna_diffusion.pipelines.scheduler_for_solver`), the plan's skips and
reuses (:func:`~optuna_diffusion.apply`), and the plan's time steps as the argument that pipeline's
scheduler accepts (:func:`~optuna_diffusion.pipeline_schedule.pipeline_schedule_kwargs`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..zoo import BUNDLED_MODELS

if TYPE_CHECKING:
    from ..plan import Plan
    from ..study_config import StudyConfig

FAMILY_OF_PIPELINE: dict[str, str] = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "PixArtAlphaPipeline": "pixart",
    "PixArtSigmaPipeline": "pixart",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
    "DiTPipeline": "dit",
}
"""The call template of each pipeline class optuna-diffusion exports to."""

_NOTES = {
    "sd": "  (Stable Diffusion 1.x and 2.x, epsilon or v-prediction)",
    "sdxl": "",
    "pixart": "  (PixArt-Sigma; PixArt-Alpha the same with PixArtAlphaPipeline)",
    "sd3": "  (flow matching: the plan's steps become sigmas under the scheduler's shift)",
    "flux": "  (dev shifts its sigmas by mu, computed from the latent tokens; schnell ignores mu)",
    "dit": "  (DiTPipeline takes no time steps: its scheduler is given the plan's)",
}

_HEAD = """\
# family: {family}{note}
import json

import torch
from diffusers import {pipeline_class}
{extra_import}
from optuna_diffusion import Plan, apply
{schedule_import}from optuna_diffusion.pipelines import {pipeline_imports}

plan = Plan.from_dict(json.load(open({plan_file}))["plan"])
pipe = {pipeline_class}.from_pretrained({source})
pipe.scheduler = scheduler_for_solver({solver}, pipe.scheduler)  # the study's [sampling] solver
"""

_STUDY_INPUTS = """\
height, width = study_image_size(pipe, {image_size})  # the study's [model] image_size (None: pipeline default)
prompts = {prompts}  # the prompts of the study's first samples
{negatives}latents = study_latents(pipe, seed={seed}, count=len(prompts), height=height, width=width)  # their noise
"""

_GENERATOR = "generator=torch.Generator().manual_seed({generator_seed})"

_BODIES = {
    "text": """\
apply(pipe, plan)                                                  # skips and reuses, per step
""" + _STUDY_INPUTS + """\
images = pipe(prompts, {negative_argument}guidance_scale={guidance_scale}, height=height, width=width, latents=latents,
              {extra_arguments}""" + _GENERATOR + """,  # the study's first batch's (ddpm's step noise)
              **pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler)).images
""",
    "flux": """\
apply(pipe, plan)                                                  # double- and single-stream blocks
""" + _STUDY_INPUTS + """\
c = pipe.scheduler.config                                          # the mu Flux passes (FLUX.1-dev)
mu = calculate_shift(latents.shape[1], c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
images = pipe(prompts, guidance_scale={guidance_scale}, height=height, width=width, latents=latents,
              """ + _GENERATOR + """,  # the study's first batch's
              **pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler, mu=mu)).images
""",
    "dit": """\
apply(pipe, plan)                                                  # skips and reuses, per step
set_timesteps = pipe.scheduler.set_timesteps
pipe.scheduler.set_timesteps = lambda *args, **kwargs: set_timesteps(timesteps=list(plan.timesteps))
labels = {class_labels}  # the class labels of the study's first samples
images = pipe(class_labels=labels, guidance_scale={guidance_scale}, num_inference_steps=plan.num_steps,
              generator=torch.Generator().manual_seed({seed} * 1_000_003)).images  # the study's noise of samples 0..63
""",
}


def pipeline_call(
    pipeline_class: str,
    *,
    source: str,
    solver: str,
    guidance_scale: float,
    prompts: tuple[str, ...] = ("a cat asleep on a green sofa",),
    negative_prompts: tuple[str, ...] | None = None,
    class_labels: tuple[int, ...] = (207,),
    image_size: int | None = None,
    seed: int = 0,
    plan_file: str = "plan.json",
) -> str:
    """The Python code that runs the plan in ``plan_file`` with ``pipeline_class`` loaded from ``source``.

    It makes the images of a study's first samples: ``prompts`` (and ``negative_prompts``, None: the
    pipeline's default) or, for DiT, ``class_labels``, at ``image_size`` (None: the pipeline's default),
    from the initial noise of ``seed`` (:func:`~optuna_diffusion.pipelines.study_latents`) and the
    generator the study's first batch used (``seed * 7``, the ``ddpm`` solver's step noise).
    """
    family = FAMILY_OF_PIPELINE.get(pipeline_class)
    if family is None:
        raise ConfigError(f"no pipeline call for a {pipeline_class}; export knows {', '.join(FAMILY_OF_PIPELINE)}")
    body = _BODIES.get(family, _BODIES["text"])
    bundled = source in BUNDLED_MODELS  # shipped inside the package: its folder, wherever that is installed
    extra_imports = ["from diffusers.pipelines.flux.pipeline_flux import calculate_shift"] if family == "flux" else []
    extra_imports += ["from optuna_diffusion.zoo import bundled_model_path"] if bundled else []
    head = _HEAD.format(
        family=family,
        note=_NOTES[family],
        pipeline_class=pipeline_class,
        extra_import="".join(line + "\n" for line in extra_imports),
        schedule_import="" if family == "dit" else "from optuna_diffusion.pipeline_schedule import pipeline_schedule_kwargs\n",
        pipeline_imports="scheduler_for_solver" if family == "dit" else "scheduler_for_solver, study_image_size, study_latents",
        plan_file=json.dumps(plan_file),
        source=f"bundled_model_path({json.dumps(source)})" if bundled else json.dumps(source),
        solver=json.dumps(solver),
    )
    negatives = f"negative_prompts = {json.dumps(list(negative_prompts))}\n" if negative_prompts is not None else ""
    return head + body.format(
        prompts=json.dumps(list(prompts)), negatives=negatives,
        negative_argument="negative_prompt=negative_prompts, " if negative_prompts is not None else "",
        extra_arguments="use_resolution_binning=False,  # the size as given\n              " if family == "pixart" else "",
        guidance_scale=repr(float(guidance_scale)), class_labels=list(class_labels),
        image_size=repr(image_size), seed=int(seed), generator_seed=int(seed) * 7,
    )


def first_batch_size(config: "StudyConfig", stage: str, solver: str, family: str) -> int:
    """How many of a study's first samples ``plan.py`` makes: up to 4, or the whole first batch under ``ddpm``
    (its step noise is drawn per batch), at most 64 for DiT (its generator draws the first noise chunk)."""
    num_samples = getattr(config, stage).num_samples
    count = min(config.sampling.batch_size, num_samples)
    if solver != "ddpm":
        count = min(count, 4)
    return min(count, 64) if family == "dit" else count


def _flux_mu(source: str, scheduler: Any, image_size: int) -> float:
    """The ``mu`` ``FluxPipeline`` computes at ``image_size`` (its VAE's factor read from the folder's config)."""
    from diffusers import AutoencoderKL

    from ..models import model_location
    from ..schedules import schedule_from_config

    vae = AutoencoderKL.load_config(model_location(source), subfolder="vae", local_files_only=True)
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    tokens = (image_size // factor // 2) ** 2  # latents cut into 2 x 2 patches
    return schedule_from_config({**scheduler.config, "_class_name": type(scheduler).__name__}).mu_for(tokens)


def study_pipeline_call(config: "StudyConfig", plan: "Plan", plan_file: str, *, stage: str = "timesteps") -> str | None:
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
    import diffusers

    from ..models import model_location, pipeline_index_of
    from ..pipeline_schedule import pipeline_schedule_kwargs
    from ..sampling import class_labels
    from ..schedules import schedule_from_config
    from ._export import scheduler_for_solver

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
