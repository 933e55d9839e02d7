import pytest
import torch

from optuna_diffusion.plan import Plan
from optuna_diffusion.sampling import PlanSampler, SamplingSettings, class_labels, initial_noise
from optuna_diffusion.solvers import SOLVERS, NoiseSchedule, sample_ddim, sample_dpmpp_2m, sample_euler

from .conftest import scheduler_config, tiny_text_unet, tiny_unet


def _denoiser(unet, labels):
    return lambda x, t: unet(x, t, class_labels=labels).sample


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_equals_diffusers_ddim_scheduler_on_uniform_plans(prediction_type):
    from diffusers import DDIMScheduler

    unet = tiny_unet()
    labels = torch.arange(4) % 10
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    config = scheduler_config(prediction_type)
    reference = DDIMScheduler(**config, set_alpha_to_one=True)
    reference.set_timesteps(10)
    schedule = NoiseSchedule.from_scheduler_config(config)
    with torch.inference_mode():
        x = x_T.clone()
        for t in reference.timesteps:
            x = reference.step(unet(x, t, class_labels=labels).sample, t, x).prev_sample
        eps_denoise = lambda x, t: schedule.epsilon(unet(x, t, class_labels=labels).sample, x, int(t))
        ours = sample_ddim(eps_denoise, x_T.clone(), [int(t) for t in reference.timesteps], schedule)
    assert [int(t) for t in reference.timesteps] == list(range(900, -1, -100))
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=0)


def test_ddim_on_uneven_steps_equals_first_order_dpm_solver():
    """DPM-Solver++ of order 1 is DDIM, so the two must agree on any time steps."""
    from diffusers import DPMSolverMultistepScheduler

    unet = tiny_unet()
    labels = torch.arange(3)
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    schedule = NoiseSchedule.from_scheduler_config(scheduler_config())
    timesteps = [944, 834, 574, 354, 217, 94]
    with torch.inference_mode():
        ours = sample_ddim(_denoiser(unet, labels), x_T.clone(), timesteps, schedule)
        dpm1 = DPMSolverMultistepScheduler.from_config(scheduler_config(), solver_order=1, final_sigmas_type="zero")
        dpm1.set_timesteps(timesteps=timesteps)
        x = x_T.clone()
        for t in dpm1.timesteps:
            x = dpm1.step(unet(x, t, class_labels=labels).sample, t, x).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("solver", [sample_dpmpp_2m, sample_euler])
def test_diffusers_solvers_visit_exactly_the_plan_time_steps(solver):
    unet = tiny_unet()
    seen = []
    schedule = NoiseSchedule.from_scheduler_config(scheduler_config())

    def denoise(x, t):
        seen.append(int(round(float(t))))
        return unet(x, t, class_labels=torch.zeros(len(x), dtype=torch.long)).sample

    with torch.inference_mode():
        out = solver(denoise, torch.randn(2, 1, 8, 8), [900, 600, 250, 40], schedule)
    assert seen == [900, 600, 250, 40]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_the_denoiser_input_at_a_step_depends_only_on_the_steps_so_far(solver):
    # The prefix cache's contract; 16 steps cross DPM-Solver++'s lower_order_final threshold (15).
    unet = tiny_unet()
    schedule = NoiseSchedule.from_scheduler_config(scheduler_config())
    steps = list(range(960, 0, -60))

    def inputs(num_steps):
        seen = []

        def denoise(x, t):
            seen.append(x.clone())
            return unet(x, t, class_labels=torch.zeros(len(x), dtype=torch.long)).sample

        with torch.inference_mode():
            SOLVERS[solver](denoise, torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                            steps[:num_steps], schedule, torch.Generator().manual_seed(1))
        return seen

    longest = inputs(len(steps))
    for num_steps in (2, 3, 4, 14, 15):
        shorter = inputs(num_steps)
        assert len(shorter) == num_steps
        assert all(torch.equal(a, b) for a, b in zip(shorter, longest)), f"{num_steps} steps"


def test_common_random_numbers_do_not_depend_on_batching():
    whole = initial_noise(3, 0, 200, (1, 8, 8))
    parts = torch.cat([initial_noise(3, a, min(a + 70, 200), (1, 8, 8)) for a in range(0, 200, 70)])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole, initial_noise(4, 0, 200, (1, 8, 8)))
    labels = class_labels(0, 100, 10)
    assert torch.bincount(labels).tolist() == [10] * 10
    assert torch.equal(labels, class_labels(0, 100, 10))


def test_plan_sampler_is_deterministic_and_batch_size_invariant(tiny_model):
    plan = Plan([900, 500, 100])
    samples = []
    for batch_size in (7, 20, 7):
        sampler = PlanSampler(tiny_model, SamplingSettings(num_classes=10, batch_size=batch_size))
        samples.append(torch.cat(list(sampler.batches(plan, 20))))
        sampler.close()
    assert samples[0].shape == (20, 1, 8, 8)
    assert torch.equal(samples[0], samples[2])
    # Different batch sizes change float summation order only.
    torch.testing.assert_close(samples[0], samples[1], atol=2e-4, rtol=0)


def test_guidance_runs_a_batched_null_pass(tiny_model):
    calls = []
    tiny_model.unet.register_forward_pre_hook(lambda m, args, kwargs: calls.append(kwargs["class_labels"].clone()), with_kwargs=True)
    settings = SamplingSettings(num_classes=10, null_class=10, guidance_scale=3.0, batch_size=4)
    with PlanSampler(tiny_model, settings) as sampler:
        images = list(sampler.batches(Plan([700, 300]), 4))
    assert len(calls) == 2 and calls[0].tolist()[4:] == [10, 10, 10, 10]
    with PlanSampler(tiny_model, SamplingSettings(num_classes=10, batch_size=4)) as sampler:
        plain = list(sampler.batches(Plan([700, 300]), 4))
    assert not torch.allclose(images[0], plain[0])


def test_x0_clipping_bounds_the_output(tiny_model):
    settings = SamplingSettings(num_classes=10, clip_x0=True)
    (images,) = PlanSampler(tiny_model, settings).batches(Plan([999, 500]), 8)
    assert images.abs().max() <= 1.0 + 1e-5


def test_a_text_conditional_unet_runs_a_plan_with_guidance_and_skips():
    from optuna_diffusion.errors import ConfigError
    from optuna_diffusion.models import DiffusionModel
    from optuna_diffusion.sampling import TextConditioning

    unet = tiny_text_unet().requires_grad_(False)
    model = DiffusionModel(unet, scheduler_config("v_prediction"), "tiny-text")
    text = TextConditioning(torch.randn(1, 3, 16), torch.zeros(1, 3, 16))
    settings = SamplingSettings(guidance_scale=7.5, batch_size=3)
    plan = Plan([900, 500, 100], skips=[[], ["down.0.attn.0"], []], reuses=[[], [], ["mid.attn.0"]])
    with PlanSampler(model, settings, text) as sampler:
        (images,) = sampler.batches(plan, 3)
    assert images.shape == (3, 4, 8, 8) and torch.isfinite(images).all()
    with pytest.raises(ConfigError, match="prompt embeddings"):
        PlanSampler(model, settings)
    with pytest.raises(ConfigError, match="negative_prompt_embeds"):
        PlanSampler(model, settings, TextConditioning(torch.randn(1, 3, 16)))
