import math

import pytest
import torch

from optuna_diffusion.evaluation import PlanEvaluator
from optuna_diffusion.fid import reference_stats
from optuna_diffusion.plan import Plan
from optuna_diffusion.sampling import SamplingSettings
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
