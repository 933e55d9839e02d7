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

from diffusers import {pipeline_class}
{extra_import}
from optuna_diffusion import Plan, apply
{schedule_import}from optuna_diffusion.pipelines import scheduler_for_solver

plan = Plan.from_dict(json.load(open({plan_file}))["plan"])
pipe = {pipeline_class}.from_pretrained({source})
pipe.scheduler = scheduler_for_solver({solver}, pipe.scheduler)  # the study's [sampling] solver
"""

_BODIES = {
    "text": """\
apply(pipe, plan)                                                  # skips and reuses, per step
image = pipe({prompt}, guidance_scale={guidance_scale},
             **pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler)).images[0]
""",
    "flux": """\
apply(pipe, plan)                                                  # double- and single-stream blocks
height = width = pipe.default_sample_size * pipe.vae_scale_factor  # 1024
tokens = (height // (2 * pipe.vae_scale_factor)) * (width // (2 * pipe.vae_scale_factor))
c = pipe.scheduler.config                                          # the mu Flux passes (FLUX.1-dev)
mu = calculate_shift(tokens, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
image = pipe({prompt}, guidance_scale={guidance_scale}, height=height, width=width,
             **pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler, mu=mu)).images[0]
""",
    "dit": """\
set_timesteps = pipe.scheduler.set_timesteps
pipe.scheduler.set_timesteps = lambda *args, **kwargs: set_timesteps(timesteps=list(plan.timesteps))
apply(pipe, plan)                                                  # skips and reuses, per step
image = pipe(class_labels={class_labels}, guidance_scale={guidance_scale}, num_inference_steps=plan.num_steps).images[0]
""",
}


def pipeline_call(
    pipeline_class: str,
    *,
    source: str,
    solver: str,
    guidance_scale: float,
    prompt: str = "a cat asleep on a green sofa",
    class_labels: tuple[int, ...] = (207,),
    plan_file: str = "plan.json",
) -> str:
    """The Python code that runs the plan in ``plan_file`` with ``pipeline_class`` loaded from ``source``."""
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
        plan_file=json.dumps(plan_file),
        source=f"bundled_model_path({json.dumps(source)})" if bundled else json.dumps(source),
        solver=json.dumps(solver),
    )
    return head + body.format(
        prompt=json.dumps(prompt), guidance_scale=repr(float(guidance_scale)), class_labels=list(class_labels),
    )
