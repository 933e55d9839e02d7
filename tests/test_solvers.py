import numpy as np
import pytest
import torch

from optuna_diffusion.errors import ConfigError
from optuna_diffusion.plan import Plan
from optuna_diffusion.generation import ImageGenerator, SamplingSettings, class_labels, initial_noise
from optuna_diffusion.solvers import (
    SOLVER_KINDS,
    SOLVERS,
    FlowSchedule,
    NoiseSchedule,
    check_solver,
    get_solver,
    sample_ddim,
    sample_flow_dpmpp_2m,
    sample_flow_euler,
    sample_flow_unipc,
    sample_unipc,
    schedule_from_config,
    solvers_for,
)

from .helpers import scheduler_config, tiny_text_unet, tiny_unet

FLOW_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}


def _schedule_for(solver: str, num_train_timesteps: int = 1000):
    if SOLVER_KINDS[solver] == "flow":
        return FlowSchedule(num_train_timesteps)
    return NoiseSchedule.from_scheduler_config(scheduler_config())


class ToyModel(torch.nn.Module):
    """A fixed random conv net of (x, t): the "model" of the exactness tests, clearly t-dependent."""

    def __init__(self, num_train_timesteps: int = 1000, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.num_train_timesteps = num_train_timesteps
        self.inner = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.outer = torch.nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x, t):
        s = torch.as_tensor(t, dtype=torch.float32) / self.num_train_timesteps
        return self.outer(torch.tanh(self.inner(x)) * (1 + s) + torch.sin(3 * s)) + 0.5 * (s - 0.5) * x


class ToyEpsModel(ToyModel):
    """Epsilon of a bounded x0 guess, ``(x - sqrt(a) tanh(net)) / sqrt(1 - a)``, so x0 predictions stay in [-1, 1]."""

    def __init__(self, schedule: NoiseSchedule, seed: int = 0):
        super().__init__(schedule.num_train_timesteps, seed)
        self.alphas_cumprod = schedule.alphas_cumprod.float()

    def forward(self, x, t):
        alpha_prod = self.alphas_cumprod[int(round(float(t)))]
        return (x - alpha_prod.sqrt() * torch.tanh(super().forward(x, t))) / (1 - alpha_prod).sqrt()


def _noise(seed: int = 0):
    return torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


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


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_every_solver_calls_the_denoiser_once_per_plan_time_step(solver):
    # The prefix cache's first contract (flow plans include t = T, sigma = 1).
    unet = tiny_unet()
    seen = []
    steps = [1000, 600, 250, 40] if SOLVER_KINDS[solver] == "flow" else [900, 600, 250, 40]

    def denoise(x, t):
        seen.append(int(round(float(t))))
        return unet(x, t, class_labels=torch.zeros(len(x), dtype=torch.long)).sample

    with torch.inference_mode():
        generator = torch.Generator().manual_seed(1)
        out = SOLVERS[solver](denoise, torch.randn(2, 1, 8, 8), steps, _schedule_for(solver), generator)
    assert seen == steps
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_the_denoiser_input_at_a_step_depends_only_on_the_steps_so_far(solver):
    # The prefix cache's contract; 16 steps cross DPM-Solver++'s lower_order_final threshold (15).
    unet = tiny_unet()
    schedule = _schedule_for(solver)
    steps = list(range(1000, 40, -60)) if SOLVER_KINDS[solver] == "flow" else list(range(960, 0, -60))

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
        sampler = ImageGenerator(tiny_model, SamplingSettings(num_classes=10, batch_size=batch_size))
        samples.append(torch.cat(list(sampler.batches(plan, 20))))
        sampler.close()
    assert samples[0].shape == (20, 1, 8, 8)
    assert torch.equal(samples[0], samples[2])
    # Different batch sizes change float summation order only.
    torch.testing.assert_close(samples[0], samples[1], atol=2e-4, rtol=0)


def test_guidance_runs_a_batched_null_pass(tiny_model):
    calls = []
    tiny_model.denoiser.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append(kwargs["class_labels"].clone()), with_kwargs=True
    )
    settings = SamplingSettings(num_classes=10, null_class=10, guidance_scale=3.0, batch_size=4)
    with ImageGenerator(tiny_model, settings) as sampler:
        images = list(sampler.batches(Plan([700, 300]), 4))
    assert len(calls) == 2 and calls[0].tolist()[4:] == [10, 10, 10, 10]
    with ImageGenerator(tiny_model, SamplingSettings(num_classes=10, batch_size=4)) as sampler:
        plain = list(sampler.batches(Plan([700, 300]), 4))
    assert not torch.allclose(images[0], plain[0])


def test_x0_clipping_bounds_the_output(tiny_model):
    settings = SamplingSettings(num_classes=10, clip_x0=True)
    (images,) = ImageGenerator(tiny_model, settings).batches(Plan([999, 500]), 8)
    assert images.abs().max() <= 1.0 + 1e-5


def test_a_text_conditional_unet_runs_a_plan_with_guidance_and_skips():
    from optuna_diffusion.errors import ConfigError
    from optuna_diffusion.models import DiffusionModel
    from optuna_diffusion.generation import TextConditioning

    unet = tiny_text_unet().requires_grad_(False)
    model = DiffusionModel(unet, scheduler_config("v_prediction"), "tiny-text")
    text = TextConditioning(torch.randn(1, 3, 16), torch.zeros(1, 3, 16))
    settings = SamplingSettings(guidance_scale=7.5, batch_size=3)
    plan = Plan([900, 500, 100], skips=[[], ["down.0.attn.0"], []], reuses=[[], [], ["mid.attn.0"]])
    with ImageGenerator(model, settings, text) as sampler:
        (images,) = sampler.batches(plan, 3)
    assert images.shape == (3, 4, 8, 8) and torch.isfinite(images).all()
    with pytest.raises(ConfigError, match="prompt embeddings"):
        ImageGenerator(model, settings)
    with pytest.raises(ConfigError, match="negative_prompt_embeds"):
        ImageGenerator(model, settings, TextConditioning(torch.randn(1, 3, 16)))


# --- Exactness against diffusers' own scheduler loops -------------------------------------------------


def _diffusers_loop(scheduler, model, x, model_t=None):
    """``for t in scheduler.timesteps: x = scheduler.step(model(x, t), t, x).prev_sample``.

    ``model_t(i, t)`` replaces the time step the model is conditioned on (see the multistep flow tests).
    """
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(model(x, t if model_t is None else model_t(i, t)), t, x).prev_sample
    return x


def _plan_of(sigmas, num_train_timesteps):
    return [int(round(float(s) * num_train_timesteps)) for s in sigmas]


FLOW_EULER_CASES = {
    # sigmas as Flux's pipeline gives them, linspace(1, 1/K, K), for K = 4 and 5
    "pipeline-4": lambda s: s.set_timesteps(sigmas=np.linspace(1.0, 1 / 4, 4)),
    "pipeline-5": lambda s: s.set_timesteps(sigmas=np.linspace(1.0, 1 / 5, 5)),
    # the scheduler's own spacing (SD3's pipeline passes no sigmas): linspace(1, 1/T, K)
    "default-4": lambda s: s.set_timesteps(4),
    "default-10": lambda s: s.set_timesteps(10),
    "uneven": lambda s: s.set_timesteps(sigmas=[1.0, 0.9, 0.61, 0.3, 0.05]),
}


@pytest.mark.parametrize("case", sorted(FLOW_EULER_CASES))
def test_flow_euler_equals_the_flow_match_euler_scheduler_loop(case):
    from diffusers import FlowMatchEulerDiscreteScheduler

    model = ToyModel()
    reference = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    FLOW_EULER_CASES[case](reference)
    plan = _plan_of(reference.sigmas[:-1], 1000)
    torch.testing.assert_close(reference.sigmas[:-1].double(), torch.tensor(plan, dtype=torch.float64) / 1000,
                               atol=1e-7, rtol=0)  # the reference runs on the integer grid
    with torch.inference_mode():
        expected = _diffusers_loop(reference, model, _noise())
        ours = sample_flow_euler(model, _noise(), plan, FlowSchedule(1000))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


# diffusers' multistep schedulers cast sigma * T down to int64 (1000.999 -> 1000, 499.99.. -> 499), so the
# model would see t - 1 at some steps; the solvers give it the plan's t, and the references here condition
# the model on round(sigma * T) of their own sigmas to compare the updates alone.
def _rounded_t(scheduler, num_train_timesteps):
    return lambda i, t: int(round(float(scheduler.sigmas[i]) * num_train_timesteps))


@pytest.mark.parametrize("num_steps", [4, 5, 10])
def test_flow_dpmpp_2m_equals_the_dpm_solver_flow_loop_on_uniform_plans(num_steps):
    from diffusers import DPMSolverMultistepScheduler

    # DPM-Solver's own flow sigmas are (1 - 1/T)(1 - i/K): on the integer grid of T = 1001.
    model = ToyModel(1001)
    reference = DPMSolverMultistepScheduler(num_train_timesteps=1001, use_flow_sigmas=True, flow_shift=1.0,
                                            prediction_type="flow_prediction", algorithm_type="dpmsolver++",
                                            solver_order=2, final_sigmas_type="zero")
    reference.set_timesteps(num_steps)
    plan = _plan_of(reference.sigmas[:-1], 1001)
    assert plan == [1000 - 1000 * i // num_steps for i in range(num_steps)]
    with torch.inference_mode():
        expected = _diffusers_loop(reference, model, _noise(), _rounded_t(reference, 1001))
        ours = sample_flow_dpmpp_2m(model, _noise(), plan, FlowSchedule(1001))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def _vp_from_flow_grid(num_train_timesteps: int, top_sigma: float = 0.9999):
    """Betas of a VP schedule whose index j has the flow sigma (j + 1) / T: VP sigma / alpha = sigma / (1 - sigma)."""
    sigmas = torch.arange(1, num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    sigmas[-1] = min(sigmas[-1], top_sigma)  # the VP table cannot hold sigma = 1 (alpha = 0)
    alphas_cumprod = (1 - sigmas) ** 2 / ((1 - sigmas) ** 2 + sigmas**2)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    return (1 - alphas_cumprod / previous).tolist()


def test_flow_dpmpp_2m_on_uneven_steps_equals_dpm_solver_on_the_same_ode_in_vp_coordinates():
    """DPM-Solver++ depends on the noise levels only through log-SNR, so it gives the same x0 on the flow ODE and
    on the equivalent VP ODE (x_vp = x_flow / n, n = sqrt((1 - sigma)^2 + sigma^2)); diffusers' VP scheduler takes
    uneven ``timesteps=`` natively."""
    from diffusers import DPMSolverMultistepScheduler

    T = 1000
    plan = [980, 850, 610, 300, 120, 30]
    model = ToyModel(T)
    reference = DPMSolverMultistepScheduler(num_train_timesteps=T, trained_betas=_vp_from_flow_grid(T),
                                            algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
    reference.set_timesteps(timesteps=[t - 1 for t in plan])  # VP index j holds flow t = j + 1
    flow_sigmas = reference.sigmas[:-1].double() / (1 + reference.sigmas[:-1].double())
    torch.testing.assert_close(flow_sigmas, torch.tensor(plan, dtype=torch.float64) / T, atol=5e-6, rtol=0)

    def eps_model(x_vp, j):
        sigma = (int(j) + 1) / T
        n = ((1 - sigma) ** 2 + sigma**2) ** 0.5
        x_flow = x_vp * n
        return x_flow + (1 - sigma) * model(x_flow, int(j) + 1)  # epsilon = x + (1 - sigma) v

    n0 = ((1 - plan[0] / T) ** 2 + (plan[0] / T) ** 2) ** 0.5
    with torch.inference_mode():
        expected = _diffusers_loop(reference, eps_model, _noise() / n0)
        ours = sample_flow_dpmpp_2m(model, _noise(), plan, FlowSchedule(T))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


FLOW_UNIPC_CASES = {
    # (T, how the reference gets its sigmas): UniPC's own spacing linspace(1, 1/T, K + 1)[:K] is on the grid of
    # T = 1001; Flux-style pipeline sigmas; uneven sigmas.
    "default-4": (1001, lambda s: s.set_timesteps(4)),
    "default-10": (1001, lambda s: s.set_timesteps(10)),
    "pipeline-5": (1000, lambda s: s.set_timesteps(sigmas=np.linspace(1.0, 1 / 5, 5))),
    "uneven": (1000, lambda s: s.set_timesteps(sigmas=np.array([1.0, 0.9, 0.61, 0.3, 0.12, 0.05]))),
}


@pytest.mark.parametrize("case", sorted(FLOW_UNIPC_CASES))
def test_flow_unipc_equals_the_unipc_flow_loop(case):
    from diffusers import UniPCMultistepScheduler

    T, set_sigmas = FLOW_UNIPC_CASES[case]
    model = ToyModel(T)
    reference = UniPCMultistepScheduler(num_train_timesteps=T, use_flow_sigmas=True, flow_shift=1.0,
                                        prediction_type="flow_prediction", solver_order=2, solver_type="bh2")
    set_sigmas(reference)
    plan = _plan_of(reference.sigmas[:-1], T)
    assert plan[0] == T and int(reference.timesteps[0]) == T - 1  # diffusers feeds t = T - 1 at sigma = 1 - 1e-6
    with torch.inference_mode():
        expected = _diffusers_loop(reference, model, _noise(), _rounded_t(reference, T))
        ours = sample_flow_unipc(model, _noise(), plan, FlowSchedule(T))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
@pytest.mark.parametrize("num_steps", [4, 10])
def test_unipc_equals_the_unipc_scheduler_loop_on_its_own_time_steps(spacing, num_steps):
    from diffusers import UniPCMultistepScheduler

    schedule = NoiseSchedule.from_scheduler_config(scheduler_config())
    model = ToyEpsModel(schedule)
    reference = UniPCMultistepScheduler.from_config(scheduler_config(), timestep_spacing=spacing, solver_order=2)
    reference.set_timesteps(num_steps)
    plan = [int(t) for t in reference.timesteps]
    with torch.inference_mode():
        expected = _diffusers_loop(reference, model, _noise())
        ours = sample_unipc(model, _noise(), plan, schedule)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_unipc_on_uneven_steps_equals_unipc_on_the_same_ode_in_flow_coordinates():
    """UniPC, like DPM-Solver++, depends on the noise levels only through log-SNR: the VP plan equals UniPC on the
    flow ODE with sigma_f = sigma / (1 + sigma) (x_flow = x_vp * n, n = sqrt((1 - sigma_f)^2 + sigma_f^2)), which
    diffusers' UniPC takes as uneven ``sigmas=``."""
    from diffusers import UniPCMultistepScheduler

    schedule = NoiseSchedule.from_scheduler_config(scheduler_config())
    model = ToyEpsModel(schedule)
    plan = [944, 834, 574, 354, 217, 94]
    vp_sigmas = ((1 - schedule.alphas_cumprod[plan]) / schedule.alphas_cumprod[plan]).sqrt().float().double()
    flow_sigmas = (vp_sigmas / (1 + vp_sigmas)).numpy()
    reference = UniPCMultistepScheduler(num_train_timesteps=1000, use_flow_sigmas=True, flow_shift=1.0,
                                        prediction_type="flow_prediction", solver_order=2, solver_type="bh2")
    reference.set_timesteps(sigmas=flow_sigmas)

    def velocity(x_flow, i):
        sigma = float(reference.sigmas[i])
        n = ((1 - sigma) ** 2 + sigma**2) ** 0.5
        x_vp = x_flow / n
        alpha_vp, sigma_vp = (1 - sigma) / n, sigma / n
        eps = model(x_vp, plan[i])
        return eps - (x_vp - sigma_vp * eps) / alpha_vp  # v = eps - x0

    steps = iter(range(len(plan)))
    n0 = ((1 - flow_sigmas[0]) ** 2 + flow_sigmas[0] ** 2) ** 0.5
    with torch.inference_mode():
        expected = _diffusers_loop(reference, lambda x, t: velocity(x, next(steps)), _noise() * n0)
        ours = sample_unipc(model, _noise(), plan, schedule)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


# --- Registry and schedule kinds ------------------------------------------------------------------------


def test_each_solver_runs_only_on_its_schedule_kind():
    ddpm = NoiseSchedule.from_scheduler_config(scheduler_config())
    flow = schedule_from_config(FLOW_CONFIG)
    assert set(SOLVER_KINDS) == set(SOLVERS)
    assert solvers_for("flow") == ["flow-euler", "flow-dpmpp-2m", "flow-unipc"]
    assert solvers_for("ddpm") == ["ddim", "dpmpp-2m", "euler", "ddpm", "unipc"]
    for name in solvers_for("ddpm"):
        assert check_solver(name, ddpm) is SOLVERS[name]
        with pytest.raises(ConfigError, match=f"solver '{name}' runs on DDPM-style .* flow-euler, flow-dpmpp-2m"):
            check_solver(name, flow)
        with pytest.raises(ConfigError, match="runs on DDPM-style"):
            SOLVERS[name](lambda x, t: x, torch.zeros(1, 1, 2, 2), [1000, 500], flow)
    for name in solvers_for("flow"):
        assert check_solver(name, flow) is SOLVERS[name]
        with pytest.raises(ConfigError, match=f"solver '{name}' runs on flow-matching models, but .* DDPM-style"):
            check_solver(name, ddpm)
        with pytest.raises(ConfigError, match="runs on flow-matching"):
            SOLVERS[name](lambda x, t: x, torch.zeros(1, 1, 2, 2), [900, 500], ddpm)
        with pytest.raises(ConfigError, match=r"time step 0 of a flow-matching plan is outside \[1, 1000\]"):
            SOLVERS[name](lambda x, t: x, torch.zeros(1, 1, 2, 2), [900, 0], flow)
    with pytest.raises(ConfigError, match="unknown solver 'heun'"):
        get_solver("heun")
    with pytest.raises(ConfigError, match="unknown schedule kind"):
        solvers_for("ve")


def test_a_flow_solver_runs_a_perfect_velocity_to_the_data_in_one_step():
    # With the true velocity of a single data point x0, x_t = (1 - sigma) x0 + sigma noise lands on x0 exactly.
    x0 = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    noise = _noise()[:1, :, :4, :4]
    for name in solvers_for("flow"):
        out = SOLVERS[name](lambda x, t: noise - x0, noise.clone(), [1000, 700, 300], FlowSchedule(1000))
        torch.testing.assert_close(out, x0, atol=1e-5, rtol=0, msg=name)


# ``euler`` is diffusers' Euler (linspace spacing), not DDIM ----------------------------------------------


def _diffusers_euler_loop(model, x_T, timesteps, config, spacing):
    from diffusers import EulerDiscreteScheduler

    reference = EulerDiscreteScheduler.from_config(config, final_sigmas_type="zero", timestep_spacing=spacing)
    reference.set_timesteps(timesteps=list(timesteps))
    x = x_T * reference.init_noise_sigma
    for t in reference.timesteps:
        x = reference.step(model(reference.scale_model_input(x, t), t), t, x).prev_sample
    return x


@pytest.mark.parametrize("first", [901, 750, 500])
def test_euler_is_diffusers_euler_and_ddim_only_from_scaled_noise(first):
    """``euler`` equals ``EulerDiscreteScheduler`` (linspace) at any first step; its update is DDIM's but it
    starts from ``sqrt(1 - alpha_prod_t0)`` times the noise, so it differs from ``ddim`` on the same noise,
    the more the further the first step is from T."""
    from optuna_diffusion.solvers import sample_euler

    config = scheduler_config()
    schedule = NoiseSchedule.from_scheduler_config(config)
    model = ToyEpsModel(schedule)
    steps = [first, first * 2 // 3, first // 3, 20]
    x_T = _noise(4)
    with torch.inference_mode():
        ours = sample_euler(model, x_T.clone(), steps, schedule)
        euler_linspace = _diffusers_euler_loop(model, x_T.clone(), steps, config, "linspace")
        ddim = sample_ddim(model, x_T.clone(), steps, schedule)
        scaled = sample_ddim(model, (1 - schedule.alpha_prod(first)).sqrt().float() * x_T, steps, schedule)
        euler_leading = _diffusers_euler_loop(model, x_T.clone(), steps, config, "leading")
    torch.testing.assert_close(ours, euler_linspace, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours, scaled, atol=2e-4, rtol=0)  # the two work in different variables
    # Leading spacing (SDXL's stock scheduler) scales the noise by sqrt(sigma^2 + 1): DDIM's own start.
    torch.testing.assert_close(euler_leading, ddim, atol=2e-4, rtol=0)
    gap = float((ours - ddim).abs().max() / (ddim.max() - ddim.min()))
    expected_scale = 1 - float((1 - schedule.alpha_prod(first)).sqrt())  # how much smaller the start is
    assert gap > 0.1 * expected_scale, (gap, expected_scale)


def test_euler_leaves_ddim_further_behind_the_further_the_first_step_is_from_T():
    from optuna_diffusion.solvers import sample_euler

    schedule = NoiseSchedule.from_scheduler_config(scheduler_config())
    model = ToyEpsModel(schedule)
    gaps = []
    with torch.inference_mode():
        for first in (901, 750, 500):
            steps = [first, first * 2 // 3, first // 3, 20]
            ddim = sample_ddim(model, _noise(4), steps, schedule)
            gaps.append(float((sample_euler(model, _noise(4), steps, schedule) - ddim).abs().max()))
    assert gaps[0] < gaps[1] < gaps[2]
