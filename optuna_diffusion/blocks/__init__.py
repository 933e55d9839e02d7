"""Skippable blocks of a diffusers denoiser, and the switch that skips or reuses them per step.

Block names are positional, so they are stable for a given architecture.

UNets (``UNet2DModel``, ``UNet2DConditionModel``):

* ``down.1.resnet.0``, ``down.1.attn.0``, ``mid.resnet.1``, ``mid.attn.0``, ``up.0.resnet.2`` ...:
  single residual and attention blocks. Skipped, an attention block returns its input and a
  residual block returns its shortcut path (identity, or its 1x1 conv when channels change).
  Reused, either returns its output of the previous step (computed or skipped).
* ``up.0``, ``up.1`` ...: a whole deep branch, as DeepCache caches it. Reusing ``up.i`` takes up
  block i's output of the previous step, so up blocks 0..i, the middle block and the down-path
  modules that feed only them are not computed at that step. The top level always runs.

Transformers (``DiTTransformer2DModel``, ``PixArtTransformer2DModel``, ``SD3Transformer2DModel``,
``FluxTransformer2DModel``):

* ``blocks.k``: a whole block. Skipped, it returns its input streams (a tensor, or the tuple
  ``(encoder_hidden_states, hidden_states)`` of SD3/Flux joint blocks). Reused, it adds to its input
  the residual ``output - input`` of every stream it updates, from the last step where it ran
  (FORA, Delta-DiT).
* ``blocks.k.attn``, ``blocks.k.cross_attn`` (PixArt), ``blocks.k.attn2`` (SD3.5), ``blocks.k.ff``,
  ``blocks.k.ff_context`` (SD3/Flux text stream): sub-layers. Skipped, one returns zeros of its
  output's shape, so it adds nothing to the residual stream; reused, its output of the last step
  where it ran.
* A block or sub-layer reused before it ever ran, but after steps where it was skipped (alone, or
  with its whole block), adds nothing again: the contribution it made then. (The architecture
  sampler makes such skip-then-reuse plans; a UNet block reused after a skip likewise returns its
  skipped output.)
* ``single.j``, ``single.j.attn``, ``single.j.mlp``: Flux's single-stream blocks, likewise.
* ``tail.k``, ``tail.single.j``: every block from ``blocks.k`` / ``single.j`` to the end of the
  network (reuse only). Reused, the tail's combined residual (output of the last block minus input of
  its first block, at the last step where the tail ran) is added to the first block's input and no
  block of the tail runs (First-Block-Cache / DeepCache form).

Reusing a block at a step where it has no previous output raises :class:`~optuna_diffusion.errors.PlanError`.

:class:`BlockSwitch` registers one diffusers ``ModelHook`` per block module (the model is not
copied) and, when it follows a :class:`~optuna_diffusion.plan.Plan`, picks each step's choices from
the time step the model is called with. With nothing chosen, every hook calls the original forward.
"""

from ._block import Block, BlockKind, check_plan_blocks, lies_inside
from ._switch import BlockSwitch, find_blocks, installed_switch
from ._timesteps import TimestepOf, default_timestep_of, timestep_scale

__all__ = [
    "Block",
    "BlockKind",
    "BlockSwitch",
    "TimestepOf",
    "check_plan_blocks",
    "default_timestep_of",
    "find_blocks",
    "installed_switch",
    "lies_inside",
    "timestep_scale",
]
