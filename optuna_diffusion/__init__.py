"""optuna-diffusion: search few-step diffusion sampling plans (time steps and skipped UNet blocks) with Optuna."""

from .apply import apply
from .baselines import baseline_plan, baseline_plans
from .blocks import Block, BlockSwitch, find_blocks
from .errors import OptunaDiffusionError, PlanError
from .evaluation import Evaluation, PlanEvaluator, digits_evaluator
from .fidelity import FidelityPolicy
from .models import DiffusionModel, load_diffusion_model
from .objective import PlanObjective
from .plan import Plan
from .prefix_cache import PrefixCache
from .sampling import ImageGenerator, SamplingSettings, TextConditioning
from .samplers import ArchitectureSampler, TimestepSampler

__version__ = "0.1.0"

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
