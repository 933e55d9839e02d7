import math
import re

import pytest
import torch

from optuna_diffusion.evaluation import PlanEvaluator
from optuna_diffusion.reference_stats import reference_stats
from optuna_diffusion.plan import Plan
from optuna_diffusion.generation import SamplingSettings
from optuna_diffusion.zoo.data import load_digits_images
from optuna_diffusion.zoo.feature_net import DigitsFeatureNet


@pytest.fixture
def evaluator(tiny_model):
    torch.manual_seed(0)
    extractor = DigitsFeatureNet().eval()
    images, _ = load_digits_images()
    evaluator = PlanEvaluator(tiny_model, SamplingSettings(num_classes=10, batch_size=32), extractor, reference_stats(images, extractor))
    yield evaluator
    evaluator.close()


def test_evaluation_gives_fid_and_plan_macs(evaluator):
    plan = Plan([900, 600, 300, 50])
    result = evaluator.evaluate(plan, 64)
    assert result.ok and result.fid > 0 and result.num_samples == 64
    assert result.macs == 4 * evaluator.macs_table.full
    skipping = Plan([900, 600, 300, 50], skips=[[], ["mid.attn.0"], [], []])
    assert evaluator.evaluate(skipping, 64).macs < result.macs
    again = evaluator.evaluate(plan, 64)
    assert again.fid == result.fid  # common random numbers: the same plan scores the same


def test_non_finite_samples_are_a_failure_not_an_exception(evaluator):
    handle = evaluator.model.denoiser.conv_out.register_forward_hook(lambda m, a, out: out * math.nan)
    result = evaluator.evaluate(Plan([900, 100]), 32)
    handle.remove()
    assert not result.ok and result.fid == math.inf and "NaN" in result.failure


# One rule for guidance: the family's ---------------------------------------------------------------


def _calls_per_step(evaluator, plan):
    """(denoiser calls, images per call) while the evaluator generates one image of ``plan``."""
    batches = []
    handle = evaluator.model.denoiser.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(
            next(v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)).shape[0]
        ),
        with_kwargs=True,
    )
    try:
        evaluator.samples(plan, 1)
    finally:
        handle.remove()
    return len(batches) / plan.num_steps, set(batches)


@pytest.mark.parametrize("pipeline, guidance_scale, calls", [("flux-dev", 3.5, 1), ("sd", 7.5, 2)])
def test_the_cheapest_plan_check_counts_denoiser_calls_as_generation_runs_them(pipeline, guidance_scale, calls):
    """Flux-dev takes its guidance scale as an input (one call per step); SD's classifier-free guidance
    runs two: the runner's MACs-budget floor follows the same rule as generation and the plans' MACs."""
    from optuna_diffusion.errors import ConfigError
    from optuna_diffusion.fitness import TeacherFitness
    from optuna_diffusion.models import model_from_pipeline
    from optuna_diffusion.runner import check_macs_budget

    from .tiny_pipelines import IMAGE_SIZES, TINY_PIPELINES

    flow = pipeline.startswith("flux")
    model = model_from_pipeline(TINY_PIPELINES[pipeline](), source=f"tiny-{pipeline}", image_size=IMAGE_SIZES.get(pipeline))
    settings = SamplingSettings(solver="flow-euler" if flow else "ddim", guidance_scale=guidance_scale, batch_size=1)
    evaluator = PlanEvaluator(model, settings, fitness=TeacherFitness("psnr", steps=2))
    try:
        table = evaluator.macs_table
        cheapest = table.step_macs(skips=tuple(table.skip_savings))
        plan = Plan([750, 250], schedule_kind="flow" if flow else "ddpm")
        assert evaluator.uses_guidance is (calls == 2)
        assert _calls_per_step(evaluator, plan) == (1, {calls})
        assert evaluator.macs_parts(plan)["denoiser"] == calls * table.plan_macs(plan)
        assert evaluator.cheapest_step_macs() == calls * cheapest

        check_macs_budget(calls * cheapest, evaluator)  # a budget at the floor is allowed
        with pytest.raises(ConfigError, match=re.escape(f"below the cheapest possible plan ({calls * cheapest:g} MACs")):
            check_macs_budget(calls * cheapest - 1, evaluator)
    finally:
        evaluator.close()
