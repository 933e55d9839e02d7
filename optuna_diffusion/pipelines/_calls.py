"""The Python call that runs an exported plan in its diffusers pipeline: :class:`CallTemplate`.

Each pipeline family (:mod:`optuna_diffusion.families`) owns the template of its call (its
``call_template``); :func:`optuna_diffusion.export_call.pipeline_call` finds the family of a pipeline
class and renders it. ``export --out plan.json`` writes the call beside the plan (``plan.py``) for a
pipeline study, and the reference page (docs/reference.md) shows each family's call rendered with
example values; ``tests/test_reference_snippets.py`` runs those blocks and checks that they are exactly
what the template renders, so the page and the exported files cannot drift apart. Every call makes the
same three moves: the scheduler that runs the study's solver
(:func:`~optuna_diffusion.pipelines.scheduler_for_solver`), the plan's skips and reuses
(:func:`~optuna_diffusion.apply`), and the plan's time steps as the argument that pipeline's scheduler
accepts (:func:`~optuna_diffusion.pipelines.pipeline_schedule_kwargs`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..zoo import BUNDLED_MODELS
from ._schedule import pipeline_schedule_kwargs

_HEAD = """\
# family: {label}{note}
import json

import torch
from diffusers import {pipeline_class}
{extra_import}
{project_imports}
plan = Plan.from_dict(json.load(open({plan_file}))["plan"])
pipe = {pipeline_class}.from_pretrained({source})
pipe.scheduler = scheduler_for_solver({solver}, pipe.scheduler)  # the study's [sampling] solver
"""

_PROJECT_IMPORTS = ("from optuna_diffusion import Plan, apply", "from optuna_diffusion.pipelines import scheduler_for_solver")

PROMPTED_IMPORTS = (
    "from optuna_diffusion.pipelines import pipeline_schedule_kwargs",
    "from optuna_diffusion.study_inputs import study_image_size, study_latents",
)
"""What a call on the study's prompts, size and noise imports beside the head's imports."""

STUDY_INPUTS = """\
height, width = study_image_size(pipe, {image_size})  # the study's [model] image_size (None: pipeline default)
prompts = {prompts}  # the prompts of the study's first samples
{negatives}latents = study_latents(pipe, seed={seed}, count=len(prompts), height=height, width=width)  # their noise
"""
"""The lines that make the study's first prompts, image size and initial latents."""

GENERATOR = "generator=torch.Generator().manual_seed({generator_seed})"
"""The generator of the study's first batch (``seed * 7``: the ``ddpm`` solver's step noise)."""

PROMPTED_BODY = """\
apply(pipe, plan)                                                  # skips and reuses, per step
""" + STUDY_INPUTS + """\
images = pipe(prompts, {negative_argument}guidance_scale={guidance_scale}, height=height, width=width, latents=latents,
              {extra_arguments}""" + GENERATOR + """,  # the study's first batch's (ddpm's step noise)
              **pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler)).images
"""
"""The body of a text-to-image call that passes the plan's time steps to the pipeline (SD, SDXL, PixArt, SD3)."""


@dataclass(frozen=True)
class CallTemplate:
    """The call of one pipeline family, and what export must know of it.

    Attributes:
        label: the family's name in the call's first line (``# family: sd``).
        body: the lines after the head (which loads the plan and the pipeline and swaps its scheduler), a
            format string of the :meth:`render` values (``prompts``, ``negatives``, ``negative_argument``,
            ``extra_arguments``, ``guidance_scale``, ``class_labels``, ``image_size``, ``num_frames``, ``seed``,
            ``generator_seed``).
        note: what the first line adds after the label.
        imports: third-party imports the body needs beyond torch and the pipeline class.
        project_imports: optuna-diffusion imports the body needs beyond ``Plan``, ``apply`` and
            ``scheduler_for_solver``.
        arguments: extra keyword arguments of the pipeline call, each line ending in a comma.
        patches_scheduler: whether the pipeline takes no time steps, so the call patches its scheduler's
            ``set_timesteps`` with the plan's (else they go as ``pipeline_schedule_kwargs``).
        shift_patch: under dynamic shifting, the side of the latent patches whose count gives the ``mu``
            the call passes (Flux: 2); None: the call passes no ``mu``.
        negative_prompts: whether the call passes the study's negative prompts.
        max_first_samples: the most first samples the call can make as the study did (None: no cap).
        ddpm_refusal: why the call cannot make a ``ddpm`` study's samples (None: it can).
    """

    label: str
    body: str = PROMPTED_BODY
    note: str = ""
    imports: tuple[str, ...] = ()
    project_imports: tuple[str, ...] = PROMPTED_IMPORTS
    arguments: str = ""
    patches_scheduler: bool = False
    shift_patch: int | None = None
    negative_prompts: bool = True
    max_first_samples: int | None = None
    ddpm_refusal: str | None = None

    def set_timesteps(self, scheduler: Any, timesteps: Sequence[int], *, solver: str, mu: float | None = None) -> None:
        """Hand ``timesteps`` to ``scheduler`` as the call does (the check export makes before writing it).

        Raises:
            ConfigError: the scheduler does not accept them (one line saying why).
        """
        if self.patches_scheduler:
            scheduler.set_timesteps(timesteps=list(timesteps))
        else:
            pipeline_schedule_kwargs(timesteps, scheduler, solver=solver, mu=mu)

    def render(
        self,
        pipeline_class: str,
        *,
        source: str,
        solver: str,
        guidance_scale: float,
        prompts: tuple[str, ...] = ("a cat asleep on a green sofa",),
        negative_prompts: tuple[str, ...] | None = None,
        class_labels: tuple[int, ...] = (207,),
        image_size: int | None = None,
        num_frames: int | None = None,
        seed: int = 0,
        plan_file: str = "plan.json",
    ) -> str:
        """The Python code that runs the plan in ``plan_file`` with ``pipeline_class`` loaded from ``source``.

        It makes the images of a study's first samples: ``prompts`` (and ``negative_prompts``, None: the
        pipeline's default) or, for a class-conditional family, ``class_labels``, at ``image_size`` (None:
        the pipeline's default) and, for a video family, ``num_frames`` (None: the pipeline's default), from
        the initial noise of ``seed``
        (:func:`~optuna_diffusion.study_inputs.study_latents`) and the generator the study's first batch
        used (``seed * 7``, the ``ddpm`` solver's step noise).
        """
        bundled = source in BUNDLED_MODELS  # shipped inside the package: its folder, wherever that is installed
        extra_imports = [*self.imports, *(["from optuna_diffusion.zoo import bundled_model_path"] if bundled else [])]
        head = _HEAD.format(
            label=self.label,
            note=f"  ({self.note})" if self.note else "",
            pipeline_class=pipeline_class,
            extra_import="".join(line + "\n" for line in extra_imports),
            project_imports="".join(line + "\n" for line in sorted({*_PROJECT_IMPORTS, *self.project_imports})),
            plan_file=json.dumps(plan_file),
            source=f"bundled_model_path({json.dumps(source)})" if bundled else json.dumps(source),
            solver=json.dumps(solver),
        )
        negatives = f"negative_prompts = {json.dumps(list(negative_prompts))}\n" if negative_prompts is not None else ""
        return head + self.body.format(
            prompts=json.dumps(list(prompts)), negatives=negatives,
            negative_argument="negative_prompt=negative_prompts, " if negative_prompts is not None else "",
            extra_arguments="".join(f"{line}\n              " for line in self.arguments.splitlines()),
            guidance_scale=repr(float(guidance_scale)), class_labels=list(class_labels),
            image_size=repr(image_size), num_frames=repr(num_frames), seed=int(seed), generator_seed=int(seed) * 7,
        )
