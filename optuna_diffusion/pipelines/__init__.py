"""diffusers pipelines as models: prompt embeddings cached per prompt, MACs per component, export.

* :class:`PromptEncoder` / :class:`EncodedPrompts`: a pipeline model's text encoders run once per
  distinct prompt (and negative prompt); the family takes the batch's embeddings from the cache.
* :func:`component_macs`: MACs of one image beyond the denoiser: its prompt's text encoding (and the
  negative prompt's under guidance) and one VAE decode.
* :func:`scheduler_for_solver`: the pipeline scheduler that runs a project solver, so that a plan run in
  the pipeline itself gives the project's images (see :mod:`optuna_diffusion.pipelines._export`).
* :func:`pipeline_schedule_kwargs`: a plan's time steps as the ``timesteps=`` or ``sigmas=`` (and ``mu``) a
  pipeline hands its scheduler (see :mod:`optuna_diffusion.pipelines._schedule`).
* :func:`pin_schedule`: a plan's schedule fixed on a scheduler, for pipelines whose call takes no
  ``timesteps=``/``sigmas=`` (``WanPipeline``; see :mod:`optuna_diffusion.pipelines._pinned`).
* :class:`CallTemplate`: the Python call that runs an exported plan in a pipeline, one per family (each
  family owns its own; :func:`optuna_diffusion.export_call.pipeline_call` renders it, which is what
  ``export`` writes beside the plan and docs/reference.md shows).
"""

from ._encoder import EncodedPrompts, PromptEncoder
from ._calls import GENERATOR, PROMPTED_BODY, PROMPTED_IMPORTS, STUDY_INPUTS, CallTemplate
from ._export import scheduler_for_solver
from ._pinned import pin_schedule, unpin_schedule
from ._macs import TEXT_ENCODERS, component_macs, text_encoder_macs, vae_decoder_macs
from ._schedule import pipeline_schedule_kwargs

__all__ = [
    "CallTemplate",
    "EncodedPrompts",
    "GENERATOR",
    "PROMPTED_BODY",
    "PROMPTED_IMPORTS",
    "PromptEncoder",
    "STUDY_INPUTS",
    "TEXT_ENCODERS",
    "component_macs",
    "pin_schedule",
    "pipeline_schedule_kwargs",
    "scheduler_for_solver",
    "text_encoder_macs",
    "unpin_schedule",
    "vae_decoder_macs",
]
