"""Out-of-memory batches: redone at half size with the same samples, the same result, the size recorded."""

import optuna
import pytest
import torch

from optuna_diffusion.errors import OptunaDiffusionError
from optuna_diffusion.evaluation import PlanEvaluator
from optuna_diffusion.reference_stats import reference_stats
from optuna_diffusion.memory import is_out_of_memory
from optuna_diffusion.objective import PlanObjective
from optuna_diffusion.plan import Plan
from optuna_diffusion.generation import SamplingSettings
from optuna_diffusion.zoo.data import load_digits_images
from optuna_diffusion.zoo.feature_net import DigitsFeatureNet

PLAN = Plan([900, 600, 300, 50])


def new_evaluator(model, batch_size=32):
    torch.manual_seed(0)
    extractor = DigitsFeatureNet().eval()
    images, _ = load_digits_images()
    return PlanEvaluator(model, SamplingSettings(num_classes=10, batch_size=batch_size), extractor, reference_stats(images, extractor))


class FailAbove:
    """Stands in for the family's decode: raises an out-of-memory error for batches above ``limit`` images."""

    def __init__(self, decode, limit, error=torch.OutOfMemoryError):
        self.decode, self.limit, self.error = decode, limit, error
        self.sizes = []

    def __call__(self, model, x):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.decode(model, x)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, lambda m: RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)")],
                         ids=["cuda", "mps"])
def test_a_batch_out_of_memory_is_redone_at_half_size_with_the_same_result(tiny_model, monkeypatch, error):
    evaluator = new_evaluator(tiny_model)
    expected = evaluator.evaluate(PLAN, 64, keep_images=40)
    fault = FailAbove(tiny_model.family.decode, limit=8, error=error)
    monkeypatch.setattr(tiny_model.family, "decode", fault)

    result = evaluator.evaluate(PLAN, 64, keep_images=40)

    assert fault.sizes[:4] == [32, 16, 8, 8]  # halved twice, then batches of 8
    assert result.batch_size == 8 and evaluator.batch_size == 8 and expected.batch_size == 32
    # The same samples; a batched convolution may round differently at another batch size (float32).
    assert result.fid == pytest.approx(expected.fid, rel=1e-6)
    assert torch.allclose(result.images, expected.images, atol=1e-4)
    evaluator.close()


def test_a_halved_batch_size_stays_for_the_next_plans_and_is_recorded_on_the_trial(tiny_model, monkeypatch):
    evaluator = new_evaluator(tiny_model)
    monkeypatch.setattr(tiny_model.family, "decode", FailAbove(tiny_model.family.decode, limit=16))
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(PlanObjective(evaluator, num_samples=48, k_min=3), n_trials=2)
    assert [t.user_attrs["batch_size"] for t in study.trials] == [16, 16]
    evaluator.close()


def test_out_of_memory_at_one_image_is_a_one_line_error(tiny_model, monkeypatch):
    evaluator = new_evaluator(tiny_model, batch_size=4)
    monkeypatch.setattr(tiny_model.family, "decode", FailAbove(tiny_model.family.decode, limit=0))
    with pytest.raises(OptunaDiffusionError, match="out of memory with a batch of 1 image") as caught:
        evaluator.evaluate(PLAN, 8)
    assert "\n" not in str(caught.value)
    evaluator.close()


def test_other_errors_are_not_retried(tiny_model, monkeypatch):
    evaluator = new_evaluator(tiny_model)
    fault = FailAbove(tiny_model.family.decode, limit=0, error=lambda m: RuntimeError("shape mismatch"))
    monkeypatch.setattr(tiny_model.family, "decode", fault)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        evaluator.evaluate(PLAN, 64)
    assert fault.sizes == [32]
    evaluator.close()


def test_out_of_memory_is_told_apart():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("expected scalar type Float"))
    assert not is_out_of_memory(ValueError("out of memory"))
