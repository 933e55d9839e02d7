"""Classifier guidance (ADM-G): the gradient of a noisy-image classifier steers DDIM and ancestral DDPM."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from optuna_diffusion.errors import ConfigError
from optuna_diffusion.evaluation import PlanEvaluator
from optuna_diffusion.reference_stats import reference_stats
from optuna_diffusion.families import Conditions
from optuna_diffusion.models import DiffusionModel
from optuna_diffusion.plan import Plan
from optuna_diffusion.generation import (
    ImageGenerator,
    SamplingSettings,
    class_labels,
    classifier_gradient,
    initial_noise,
    make_denoiser,
)
from optuna_diffusion.schedules import NoiseSchedule
from optuna_diffusion.study_config import parse_study_config
from optuna_diffusion.zoo.adm_classifier import ADMClassifier, ADMClassifierConfig

from .helpers import scheduler_config

SCALE = 2.5


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(1)
    config = ADMClassifierConfig(
        image_size=8, model_channels=32, num_res_blocks=1, attention_resolutions=(4,), channel_mult=(1, 1),
        num_head_channels=16, num_classes=10,
    )
    return ADMClassifier(config).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def model():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(  # an RGB stand-in of ADM's class-conditional UNet, as the classifier reads RGB
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=16, norm_num_groups=8, num_class_embeds=10,
    )
    return DiffusionModel(unet.eval().requires_grad_(False), scheduler_config(), "tiny-rgb")


def grad_log_p(classifier, x, t, labels):
    """An independent autograd computation of grad_x log p(y | x_t)."""
    x = x.detach().clone().requires_grad_(True)
    logits = classifier(x, torch.full((len(x),), t), return_dict=False)[0]
    log_p = torch.log_softmax(logits, dim=-1)[torch.arange(len(x)), labels].sum()
    return torch.autograd.grad(log_p, x)[0]


def test_the_guided_ddim_score_is_eps_minus_the_scaled_classifier_gradient(model, classifier):
    settings = SamplingSettings(num_classes=10, classifier="tiny", classifier_scale=SCALE)
    schedule = NoiseSchedule.from_scheduler_config(model.scheduler_config)
    labels = class_labels(0, 6, 10)
    x, t = initial_noise(0, 0, 6, (3, 8, 8)), 640
    denoise = make_denoiser(model, schedule, settings, Conditions(6, labels=labels), classifier=classifier)
    with torch.inference_mode():
        guided = denoise(x, torch.tensor(t))
    eps = model.denoiser(x, t, class_labels=labels).sample
    expected = eps - (1 - schedule.alpha_prod(t)).sqrt().float() * SCALE * grad_log_p(classifier, x, t, labels)
    torch.testing.assert_close(guided, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(guided, eps, atol=1e-3), "the classifier moved the score"


def test_the_classifier_gradient_of_a_batch_with_mixed_time_steps_is_each_samples_own(classifier):
    torch.manual_seed(3)
    x, labels = torch.randn(4, 3, 8, 8), torch.tensor([1, 7, 3, 0])
    steps = torch.tensor([900, 640, 250, 20])
    batch = classifier_gradient(classifier, x, steps, labels, SCALE)
    for i, t in enumerate(steps.tolist()):
        alone = SCALE * grad_log_p(classifier, x[i : i + 1], t, labels[i : i + 1])[0]
        torch.testing.assert_close(batch[i], alone, rtol=1e-5, atol=1e-6)
    # The first step for the whole batch (what it used to take) is a different gradient.
    first = classifier_gradient(classifier, x, steps[:1], labels, SCALE)
    assert not torch.allclose(first[1:], batch[1:], rtol=1e-2, atol=1e-4)
    with pytest.raises(ConfigError, match="one time step or one per sample"):
        classifier_gradient(classifier, x, steps[:2], labels, SCALE)


def test_guided_ancestral_ddpm_shifts_each_mean_by_variance_times_gradient(model, classifier):
    settings = SamplingSettings(solver="ddpm", num_classes=10, classifier="tiny", classifier_scale=SCALE, batch_size=4)
    plan = Plan((700, 300))
    with ImageGenerator(model, settings, classifier=classifier) as generator:
        (images,) = list(generator.batches(plan, 4))

    # The same two steps by hand: diffusers' DDPM step, then mean += variance * scale * grad log p.
    schedule = NoiseSchedule.from_scheduler_config(model.scheduler_config)
    scheduler = DDPMScheduler.from_config({**model.scheduler_config, "variance_type": "fixed_small"})
    scheduler.set_timesteps(timesteps=list(plan.timesteps))
    labels, x = class_labels(0, 4, 10), initial_noise(0, 0, 4, (3, 8, 8))
    generator = torch.Generator().manual_seed(0)
    for t, t_prev in zip(plan.timesteps, (300, None)):
        eps = model.denoiser(x, t, class_labels=labels).sample
        gradient = SCALE * grad_log_p(classifier, x, t, labels)
        stepped = scheduler.step(eps, t, x, generator=generator).prev_sample
        a_t = schedule.alpha_prod(t)
        a_prev = schedule.alpha_prod(t_prev) if t_prev is not None else torch.ones((), dtype=torch.float64)
        variance = ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=1e-20).float()
        x = stepped + variance * gradient
    torch.testing.assert_close(images, x, rtol=1e-5, atol=1e-5)


def test_macs_of_a_guided_plan_count_the_classifier_forward_and_backward(model, classifier):
    from optuna_diffusion.macs import count_macs, input_gradient_macs
    from optuna_diffusion.zoo.feature_net import DigitsFeatureNet

    torch.manual_seed(0)
    extractor = DigitsFeatureNet().eval()
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    reference = reference_stats(images, extractor)  # FID is not computed here, only MACs
    settings = SamplingSettings(num_classes=10, classifier="tiny", batch_size=4)
    plan = Plan((700, 300, 100))
    macs = {}
    for name, kwargs in (("guided", {"classifier": classifier}), ("unguided", {})):
        evaluator = PlanEvaluator(model, settings if kwargs else SamplingSettings(num_classes=10), extractor, reference, **kwargs)
        macs[name] = evaluator.macs(plan)
        evaluator.close()
    inputs = {"sample": torch.randn(1, 3, 8, 8), "timestep": torch.tensor([500])}
    forward, backward = count_macs(classifier, inputs=inputs), input_gradient_macs(classifier, inputs)
    assert 0.9 * forward <= backward <= 1.5 * forward  # input gradients only: about one more forward
    assert macs["guided"] == macs["unguided"] + 3 * (forward + backward)


def test_classifier_and_classifier_free_guidance_exclude_each_other():
    with pytest.raises(ConfigError, match="cannot be combined"):
        SamplingSettings(num_classes=10, null_class=10, guidance_scale=3.0, classifier="dir")
    text = '[model]\nsource = "digits"\n[sampling]\nnum_classes = 10\nclassifier = "c"\nguidance_scale = 4.0\n'
    with pytest.raises(ConfigError, match=r"study.toml, line 5: sampling.classifier .* cannot be combined"):
        parse_study_config(text, name="x", origin="study.toml")
