"""What a MAC count includes: the project's convention, or the acceleration papers' linear-conv one.

Counters differ in what they count for the same network. The project's (``"full"``, the default)
counts what fvcore's default handles count, convolutions, linear layers, matrix products, norms and
up-sampling, plus attention's score and value products (``Q @ K^T`` and ``attn @ V``), as torch's
``FlopCounterMode`` and the DiT paper do. thop and DeepCache's counter, behind the MACs of the Stable
Diffusion acceleration papers' tables (calflops counts the same layers), count the convolution and
linear layers only, each as one MAC per weight of a filter per output element plus one per output
element for its bias (``"linear-conv"``). ``benchmarks/macs_conventions.py`` counts the full-size
SD 1.5 UNet in both (figures in benchmarks/README.md).

A convention is a setting of the counters: :class:`~optuna_diffusion.macs.FvcoreCounter` keeps the
operators it counts (with fvcore handles that add the bias terms under linear-conv), and
:func:`~optuna_diffusion.macs.input_gradient_macs` counts either the whole backward pass or the input
gradients of the linear and conv layers. This module is the one place that says what each counts.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

MACS_CONVENTIONS: dict[str, str] = {
    "full": "convolutions, linear layers, attention's score and value products, norms and up-sampling "
    "(as torch's FlopCounterMode and the DiT paper count)",
    "linear-conv": "convolutions and linear layers only, with their biases (as thop and DeepCache's counter "
    "count, behind the Stable Diffusion acceleration papers' tables)",
}
"""Each convention's name and what it counts."""

DEFAULT_MACS_CONVENTION = "full"

LINEAR_CONV_OPERATORS = frozenset({"linear", "conv"})
"""The fvcore operators (names of ``FlopCountAnalysis.by_operator()``) that ``"linear-conv"`` counts:
``aten::linear`` and ``aten::_convolution`` (transposed convolutions included), bias terms added."""

_LINEAR_CONV_LAYERS = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)


def check_macs_convention(convention: str) -> str:
    """``convention`` when it names one of :data:`MACS_CONVENTIONS`, else a one-line :class:`ConfigError`."""
    if convention not in MACS_CONVENTIONS:
        raise ConfigError(f"unknown MACs convention {convention!r}; known: {', '.join(MACS_CONVENTIONS)}")
    return convention


def counts_fvcore_operator(convention: str, operator: str) -> bool:
    """Whether ``convention`` counts fvcore's ``operator`` (a name of ``FlopCountAnalysis.by_operator()``)."""
    return convention == "full" or operator in LINEAR_CONV_OPERATORS


def is_linear_conv_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a linear or convolution layer (``nn.Linear``, ``nn.Conv*d``, ``nn.ConvTranspose*d``)."""
    return isinstance(module, _LINEAR_CONV_LAYERS)


def layer_product_macs(module: nn.Module, layer_input: torch.Tensor, output: torch.Tensor) -> int:
    """The products of one call of a linear or conv layer, bias left out: one MAC per weight of a filter
    per output element (a transposed convolution: per input element). Its input gradient costs as many."""
    transposed = isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
    return (layer_input if transposed else output).numel() * module.weight[0].numel()
