"""MACs of an input gradient: the backward pass of classifier guidance, counted by torch itself.

fvcore counts forward passes only. The gradient of ``log p(y | x_t)`` with respect to ``x_t`` runs
the classifier's backward pass without weight gradients (the weights do not require grad): each
convolution and linear layer computes only its input gradient, which costs what its forward costs,
and each attention product two products. Rather than assume that ratio, the backward is counted
directly with :class:`torch.utils.flop_counter.FlopCounterMode` (flops / 2 = MACs), on the math
attention kernel, whose products it sees (it counts the fused CPU kernel as zero).

Under the ``"linear-conv"`` convention only the linear and conv layers' input gradients count. Their
operators do not say which layer ran them (a linear layer on a non-contiguous input runs ``bmm``
backward, like attention), so each such layer the gradient flows through (its input requires grad) is
counted at the price of its forward products, which its input gradient, the transposed product, costs.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError
from ._convention import DEFAULT_MACS_CONVENTION, check_macs_convention, is_linear_conv_layer, layer_product_macs


def input_gradient_macs(
    model: nn.Module,
    inputs: Mapping[str, Any],
    *,
    input_name: str = "sample",
    convention: str = DEFAULT_MACS_CONVENTION,
) -> int:
    """MACs of ``grad_x log_softmax(model(**inputs))[0]`` beyond the forward pass (batch 1).

    Args:
        model: a classifier returning logits (or a tuple whose first item is the logits).
        inputs: its keyword inputs, batch 1; ``inputs[input_name]`` is the image the gradient is taken of.
        input_name: the keyword of that image.
        convention: what counts (:data:`~optuna_diffusion.macs.MACS_CONVENTIONS`); ``"linear-conv"``: the
            input gradients of convolutions and linear layers only (no bias terms: a bias has no input gradient).
    """
    check_macs_convention(convention)
    if input_name not in inputs:
        raise ConfigError(f"input_gradient_macs needs the input {input_name!r}")
    kwargs = dict(inputs)
    layers = 0

    def count_layer(module: nn.Module, args: tuple, output: Any) -> None:
        nonlocal layers
        if args and isinstance(args[0], torch.Tensor) and args[0].requires_grad and isinstance(output, torch.Tensor):
            layers += layer_product_macs(module, args[0], output)

    hooks = [] if convention == "full" else [
        module.register_forward_hook(count_layer) for module in model.modules() if is_linear_conv_layer(module)
    ]
    try:
        with torch.inference_mode(False), torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            x = kwargs[input_name].detach().clone().float().requires_grad_(True)
            kwargs[input_name] = x
            output = model(**kwargs)
            logits = output[0] if isinstance(output, (tuple, list)) else getattr(output, "logits", output)
            selected = torch.log_softmax(logits.float(), dim=-1)[:, 0].sum()
            with FlopCounterMode(display=False) as counter:
                torch.autograd.grad(selected, x)
    finally:
        for hook in hooks:
            hook.remove()
    return int(counter.get_total_flops()) // 2 if convention == "full" else layers
