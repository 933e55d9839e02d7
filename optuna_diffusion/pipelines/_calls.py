"""The Python call that runs an exported plan in its diffusers pipeline, one template per family.

``export --out plan.json`` writes it beside the plan (``plan.py``) for a pipeline study, and the
reference page (docs/reference.md) shows each family's call rendered with example values;
``tests/test_reference_snippets.py`` runs those blocks and checks that they are exactly
:func:`pipeline_call`'s output, so the page and the exported files cannot drift apart. Every call makes the same three moves: the scheduler that runs
the study's solver (:func:`~optuna_diffusion.pipelines.scheduler_for_solver`), the plan's skips and
reuses (:func:`~optuna_diffusion.apply`), and the plan's time steps as the argument that pipeline's
scheduler accepts (:func:`~optuna_diffusion.pipelines.pipeline_schedule_kwargs`).
"""

from __future__ import annotations

import json

from ..errors import ConfigError
from ..zoo import BUNDLED_MODELS

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
{schedule_import}from optuna_diffusion.pipelines import scheduler_for_solver
{inputs_import}
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
    from the initial noise of ``seed`` (:func:`~optuna_diffusion.study_inputs.study_latents`) and the
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
        schedule_import="" if family == "dit" else "from optuna_diffusion.pipelines import pipeline_schedule_kwargs\n",
        inputs_import="" if family == "dit" else "from optuna_diffusion.study_inputs import study_image_size, study_latents\n",
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
