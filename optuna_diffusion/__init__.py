"""optuna-diffusion: search few-step diffusion sampling plans (time steps and skipped UNet blocks) with Optuna.

The public names below load on first use (PEP 562), so ``optuna-diffusion --help`` does not import
torch, diffusers and Optuna: ``from optuna_diffusion import Plan`` works as it always did.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .apply import apply
    from .baselines import baseline_plan, baseline_plans
    from .blocks import Block, BlockSwitch, find_blocks
    from .errors import OptunaDiffusionError, PlanError
    from .evaluation import Evaluation, PlanEvaluator, digits_evaluator
    from .fidelity import FidelityPolicy
    from .generation import ImageGenerator, SamplingSettings, TextConditioning
    from .models import DiffusionModel, load_diffusion_model
    from .objective import PlanObjective
    from .plan import Plan
    from .prefix_cache import PrefixCache
    from .samplers import ArchitectureSampler, TimestepSampler

__version__ = "0.1.0"

_EXPORTS = {
    "apply": ".apply",
    "baseline_plan": ".baselines",
    "baseline_plans": ".baselines",
    "Block": ".blocks",
    "BlockSwitch": ".blocks",
    "find_blocks": ".blocks",
    "OptunaDiffusionError": ".errors",
    "PlanError": ".errors",
    "Evaluation": ".evaluation",
    "PlanEvaluator": ".evaluation",
    "digits_evaluator": ".evaluation",
    "FidelityPolicy": ".fidelity",
    "DiffusionModel": ".models",
    "load_diffusion_model": ".models",
    "PlanObjective": ".objective",
    "Plan": ".plan",
    "PrefixCache": ".prefix_cache",
    "ImageGenerator": ".generation",
    "SamplingSettings": ".generation",
    "TextConditioning": ".generation",
    "ArchitectureSampler": ".samplers",
    "TimestepSampler": ".samplers",
}
"""Public name -> the module that defines it."""

__all__ = [
    "ArchitectureSampler",
    "Block",
    "BlockSwitch",
    "DiffusionModel",
    "Evaluation",
    "FidelityPolicy",
    "OptunaDiffusionError",
    "Plan",
    "PlanError",
    "PlanEvaluator",
    "PlanObjective",
    "ImageGenerator",
    "PrefixCache",
    "SamplingSettings",
    "TextConditioning",
    "TimestepSampler",
    "apply",
    "baseline_plan",
    "baseline_plans",
    "digits_evaluator",
    "find_blocks",
    "load_diffusion_model",
]


def __getattr__(name: str) -> Any:
    """A public name, or a submodule (``optuna_diffusion.blocks``), imported on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """The package module: importing the submodule ``optuna_diffusion.apply`` must not replace the
    function ``apply`` the package exports (an eager ``from .apply import apply`` overwrote it)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
