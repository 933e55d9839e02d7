"""MACs of one batch-1 denoiser call: :func:`count_macs` and the fvcore analysis behind it."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ._counter_protocol import MacsCounter
from ._fvcore import FvcoreCounter, as_macs, fvcore_analysis
from ._inputs import TextContext, example_inputs


def call_inputs(
    model: nn.Module,
    sample_shape: Sequence[int] | None,
    inputs: Mapping[str, Any] | None,
    timestep: int = 500,
    **conditioning: Any,
) -> dict[str, Any]:
    """``inputs`` as given (batch 1, keyword arguments of ``model``), or :func:`example_inputs`."""
    if inputs is None:
        return example_inputs(model, sample_shape, timestep=timestep, **conditioning)
    if not isinstance(inputs, Mapping) or not all(isinstance(key, str) for key in inputs):
        raise ConfigError("inputs must map the model's argument names to values (e.g. from example_inputs(model))")
    given = [name for name, value in conditioning.items() if value is not None]
    if sample_shape is not None or given:
        raise ConfigError(f"pass either inputs or sample_shape/{'/'.join(conditioning)}, not both")
    return dict(inputs)


def macs_analysis(
    model: nn.Module,
    sample_shape: Sequence[int] | None = None,
    *,
    class_labels: bool | int | torch.Tensor | None = None,
    encoder_hidden_states: TextContext = None,
    text_length: int | None = None,
    timestep: int = 500,
    inputs: Mapping[str, Any] | None = None,
) -> Any:
    """fvcore's ``FlopCountAnalysis`` of one batch-1 call, with this package's extra handles, traced.

    Module names in ``by_module()`` read ``"unet." + <module path>`` for UNets and
    ``"transformer." + <module path>`` for transformers, attributed to the modules on the call stack.

    Args:
        model: a diffusers UNet or transformer denoiser (any installed
            :class:`~optuna_diffusion.blocks.BlockSwitch` is honoured: skipped or reused blocks are
            not counted).
        sample_shape, class_labels, encoder_hidden_states, text_length, timestep: see
            :func:`~optuna_diffusion.macs.example_inputs` (MACs do not depend on the time step).
        inputs: instead, the call's keyword arguments (batch 1), e.g. from ``example_inputs(model)``.
    """
    kwargs = call_inputs(
        model, sample_shape, inputs, timestep,
        class_labels=class_labels, encoder_hidden_states=encoder_hidden_states, text_length=text_length,
    )
    return fvcore_analysis(model, kwargs)


def count_macs(
    model: nn.Module,
    sample_shape: Sequence[int] | None = None,
    *,
    class_labels: bool | int | torch.Tensor | None = None,
    encoder_hidden_states: TextContext = None,
    text_length: int | None = None,
    inputs: Mapping[str, Any] | None = None,
    counter: MacsCounter | None = None,
) -> int:
    """MACs of one batch-1 evaluation (see :func:`macs_analysis` for the arguments).

    Args:
        counter: the :class:`~optuna_diffusion.macs.MacsCounter` to use (default fvcore's).
    """
    kwargs = call_inputs(
        model, sample_shape, inputs,
        class_labels=class_labels, encoder_hidden_states=encoder_hidden_states, text_length=text_length,
    )
    return as_macs((counter or FvcoreCounter()).count(model, kwargs).total, "the call")
