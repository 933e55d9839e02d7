"""MACs of one denoiser evaluation, and of a sampling plan that skips or reuses blocks.

Counting goes through one interface, :class:`MacsCounter` (``count(model, inputs) -> MacsCount``),
whose implementation here is :class:`FvcoreCounter`: fvcore's ``FlopCountAnalysis`` on one traced
batch-1 call (see :mod:`optuna_diffusion.macs._fvcore` for what it counts and the handles added).
:func:`example_inputs` builds that call's inputs from the model's config, for diffusers UNets and the
transformers DiT, PixArt, SD3 and Flux; every function also takes explicit ``inputs``.

:class:`MacsTable` is built from one count: the MACs of a full evaluation and, per block of
:func:`~optuna_diffusion.blocks.find_blocks`, what skipping or reusing it saves. A skipped UNet
residual block still runs its 1x1 ``conv_shortcut`` when it has one; any other skipped or reused
block, branch ``up.i`` or tail ``tail.k`` runs nothing of its own (a reused transformer block adds its
cached residual, a pointwise op). :meth:`MacsTable.plan_macs` then prices any
:class:`~optuna_diffusion.plan.Plan` without tracing again.

Two conventions (:data:`MACS_CONVENTIONS`, :mod:`optuna_diffusion.macs._convention`): ``"full"``, the
default, counts attention's score and value products too (torch's ``FlopCounterMode``, the DiT paper);
``"linear-conv"`` counts convolutions and linear layers only, with their bias terms (thop, DeepCache's
counter), for numbers beside the Stable Diffusion acceleration papers'. ``FvcoreCounter(convention)``
and ``input_gradient_macs(..., convention=)`` take it.
"""

from ._convention import DEFAULT_MACS_CONVENTION, MACS_CONVENTIONS, check_macs_convention
from ._denoiser_call import count_macs, macs_analysis
from ._counter_protocol import MacsCount, MacsCounter
from ._fvcore import FvcoreCounter
from ._gradient import input_gradient_macs
from ._inputs import example_inputs
from ._table import MacsTable

__all__ = [
    "DEFAULT_MACS_CONVENTION",
    "FvcoreCounter",
    "MACS_CONVENTIONS",
    "MacsCount",
    "MacsCounter",
    "MacsTable",
    "check_macs_convention",
    "count_macs",
    "example_inputs",
    "input_gradient_macs",
    "macs_analysis",
]
