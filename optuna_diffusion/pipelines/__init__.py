"""diffusers pipelines as models: prompt embeddings cached per prompt, MACs per component, export.

* :class:`PromptEncoder` / :class:`EncodedPrompts`: a pipeline model's text encoders run once per
  distinct prompt (and negative prompt); the family takes the batch's embeddings from the cache.
* :func:`component_macs`: MACs of one image beyond the denoiser: its prompt's text encoding (and the
  negative prompt's under guidance) and one VAE decode.
* :func:`scheduler_for_solver`: the pipeline scheduler that runs a project solver, so that a plan run in
  the pipeline itself gives the project's images (see :mod:`optuna_diffusion.pipelines._export`).
"""

from ._encoder import EncodedPrompts, PromptEncoder
from ._export import scheduler_for_solver
from ._macs import TEXT_ENCODERS, component_macs, text_encoder_macs, vae_decoder_macs

__all__ = [
    "EncodedPrompts",
    "PromptEncoder",
    "TEXT_ENCODERS",
    "component_macs",
    "scheduler_for_solver",
    "text_encoder_macs",
    "vae_decoder_macs",
]
