import numpy as np
import pytest
import torch

from optuna_diffusion.errors import ConfigError
from optuna_diffusion.pipelines import pipeline_schedule_kwargs
from optuna_diffusion.schedules import FlowSchedule, NoiseSchedule, schedule_from_config, schedule_kind
from optuna_diffusion.solvers import sample_dpmpp_2m, sample_flow_euler

from .helpers import scheduler_config
from .test_solvers import ToyModel, _noise

PLAN = [1000, 901, 640, 333, 120, 7]


def _flow_match(**config):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**config)


def _with_class(scheduler):
    return {**scheduler.config, "_class_name": type(scheduler).__name__}


PIPELINE_SCHEDULERS = {
    "shift-3": (dict(shift=3.0), None),  # SD3
    "dynamic-exponential": (dict(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15), 0.93),  # Flux
    "dynamic-linear": (dict(use_dynamic_shifting=True, time_shift_type="linear"), 2.5),
}


@pytest.mark.parametrize("case", sorted(PIPELINE_SCHEDULERS))
def test_exported_sigmas_make_the_pipeline_scheduler_hold_the_plan_sigmas(case):
    config, mu = PIPELINE_SCHEDULERS[case]
    scheduler = _flow_match(**config)
    kwargs = pipeline_schedule_kwargs(PLAN, scheduler, mu=mu)
    assert set(kwargs) == {"sigmas"} and all(isinstance(s, float) for s in kwargs["sigmas"])
    assert kwargs["sigmas"][0] == 1.0 and kwargs["sigmas"] != [t / 1000 for t in PLAN]  # the shift was undone
    scheduler.set_timesteps(**kwargs, mu=mu)
    plan_sigmas = torch.tensor(PLAN, dtype=torch.float64) / 1000
    torch.testing.assert_close(scheduler.sigmas[:-1].double(), plan_sigmas, atol=1e-6, rtol=0)
    assert float(scheduler.sigmas[-1]) == 0.0
    torch.testing.assert_close(scheduler.timesteps.double(), plan_sigmas * 1000, atol=1e-3, rtol=0)
    # A saved config (scheduler_config.json, with _class_name) gives the same.
    assert pipeline_schedule_kwargs(PLAN, _with_class(_flow_match(**config)), mu=mu) == kwargs


def test_a_pipeline_loop_on_exported_sigmas_equals_flow_euler_on_the_plan():
    # What the search scored is what an SD3-like pipeline (shift 3) produces from the exported sigmas.
    model = ToyModel()
    pipeline_scheduler = _flow_match(shift=3.0)
    pipeline_scheduler.set_timesteps(**pipeline_schedule_kwargs(PLAN, pipeline_scheduler))
    with torch.inference_mode():
        x = _noise()
        for t in pipeline_scheduler.timesteps:
            x = pipeline_scheduler.step(model(x, t), t, x).prev_sample
        ours = sample_flow_euler(model, _noise(), PLAN, FlowSchedule(1000))
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=0)


def test_unipc_flow_pipelines_get_their_flow_shift_undone():
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=5.0, prediction_type="flow_prediction")
    kwargs = pipeline_schedule_kwargs(PLAN, scheduler)
    scheduler.set_timesteps(sigmas=np.asarray(kwargs["sigmas"]))
    expected = torch.tensor(PLAN, dtype=torch.float64) / 1000
    expected[0] -= 1e-6  # UniPC lowers a first sigma of 1 (its log-SNR would be -inf)
    torch.testing.assert_close(scheduler.sigmas[:-1].double(), expected, atol=1e-6, rtol=0)


def test_ddpm_style_plans_export_as_timesteps_where_the_scheduler_takes_them():
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    steps = [944, 834, 574, 354, 217, 94]
    for cls in (DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler):
        assert pipeline_schedule_kwargs(steps, cls.from_config(scheduler_config())) == {"timesteps": steps}
    # The pipeline's DPM-Solver++(2M) on the exported time steps is this package's dpmpp-2m.
    schedule = NoiseSchedule.from_scheduler_config(scheduler_config())
    model = ToyModel()
    pipeline_scheduler = DPMSolverMultistepScheduler.from_config(scheduler_config(), final_sigmas_type="zero")
    pipeline_scheduler.set_timesteps(**pipeline_schedule_kwargs(steps, pipeline_scheduler))
    with torch.inference_mode():
        x = _noise()
        for t in pipeline_scheduler.timesteps:
            x = pipeline_scheduler.step(model(x, t), t, x).prev_sample
        ours = sample_dpmpp_2m(model, _noise(), steps, schedule)
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="DDIMScheduler.set_timesteps takes no custom schedule"):
        pipeline_schedule_kwargs(steps, DDIMScheduler.from_config(scheduler_config()))
    with pytest.raises(ConfigError, match="UniPCMultistepScheduler.set_timesteps takes only sigmas="):
        pipeline_schedule_kwargs(steps, UniPCMultistepScheduler.from_config(scheduler_config()))
    with pytest.raises(ConfigError, match="refuses the plan's time steps: Cannot use `timesteps` with"):
        karras = DPMSolverMultistepScheduler.from_config(scheduler_config(), use_karras_sigmas=True)
        pipeline_schedule_kwargs(steps, karras)


def test_schedulers_that_cannot_hold_a_flow_plan_get_a_one_line_error():
    from diffusers import DPMSolverMultistepScheduler, FlowMatchHeunDiscreteScheduler

    dpm = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    cases = [
        (dpm, {}, "DPMSolverMultistepScheduler with use_flow_sigmas ignores custom time steps"),
        (FlowMatchHeunDiscreteScheduler(), {}, "takes neither timesteps= nor sigmas="),
        (_flow_match(shift_terminal=0.1), {}, "shift_terminal = 0.1 forces the last sigma"),
        (_flow_match(use_karras_sigmas=True), {}, "use_karras_sigmas = true replaces custom sigmas"),
        (_flow_match(use_dynamic_shifting=True), {}, "uses dynamic shifting: give mu"),
        (_flow_match(use_dynamic_shifting=True), {"mu": float("nan")}, "mu must be a finite number"),
        (_flow_match(use_dynamic_shifting=True, time_shift_type="linear"), {"mu": -1.0}, "needs mu > 0"),
        (dict(_flow_match().config), {}, "no _class_name"),
        ({"_class_name": "NoSuchScheduler"}, {}, "diffusers has no usable scheduler 'NoSuchScheduler'"),
        ("FlowMatchEulerDiscreteScheduler", {}, "expected a diffusers scheduler or its config, got str"),
    ]
    for scheduler, kwargs, message in cases:
        with pytest.raises(ConfigError, match=message) as error:
            pipeline_schedule_kwargs(PLAN, scheduler, **kwargs)
        assert "\n" not in str(error.value)
    for bad in ([], [900, 900], [500, 900], [1001, 3], [1000, 0], [900.5]):
        with pytest.raises(ConfigError, match="time steps must be"):
            pipeline_schedule_kwargs(bad, _flow_match())


def test_schedule_from_config_reads_either_kind():
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    assert isinstance(schedule_from_config(scheduler_config()), NoiseSchedule)
    assert isinstance(schedule_from_config(_with_class(DPMSolverMultistepScheduler())), NoiseSchedule)
    sd3 = schedule_from_config(_with_class(_flow_match(shift=3.0, num_train_timesteps=500)))
    assert isinstance(sd3, FlowSchedule) and sd3.shift == 3.0 and sd3.num_train_timesteps == 500
    assert sd3.timestep_range == (1, 500) and sd3.denoiser_output == "velocity"
    assert NoiseSchedule.from_scheduler_config(scheduler_config()).timestep_range == (0, 999)
    wan = schedule_from_config(_with_class(UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=5.0,
                                                                   prediction_type="flow_prediction")))
    assert isinstance(wan, FlowSchedule) and wan.shift == 5.0 and wan.class_name == "UniPCMultistepScheduler"
    # Without _class_name, by the keys.
    assert schedule_kind({"num_train_timesteps": 1000, "shift": 3.0}) == "flow"
    assert schedule_kind({"use_flow_sigmas": True}) == "flow"
    assert schedule_kind({"beta_schedule": "linear"}) == "ddpm"
    flux = schedule_from_config(_with_class(_flow_match(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)))
    assert flux.mu_for(256) == pytest.approx(0.5) and flux.mu_for(4096) == pytest.approx(1.15)
    assert flux.shift_factor(0.93) == pytest.approx(np.exp(0.93))
    with pytest.raises(ConfigError, match="flow-matching schedule, not a DDPM-style one"):
        NoiseSchedule.from_scheduler_config(_with_class(_flow_match()))
    with pytest.raises(ConfigError, match="DDPM-style schedule, not a flow-matching one"):
        FlowSchedule.from_scheduler_config(scheduler_config())
    with pytest.raises(ConfigError, match="invert_sigmas"):
        schedule_from_config(_with_class(_flow_match(invert_sigmas=True)))
    with pytest.raises(ConfigError, match="shift must be positive"):
        schedule_from_config({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 0})
    with pytest.raises(ConfigError, match="must be a mapping"):
        schedule_from_config(None)


@pytest.mark.parametrize(("solver", "scheduler"), [
    ("euler", "EulerDiscreteScheduler"), ("ddim", "DPMSolverMultistepScheduler"), ("ddpm", "DDPMScheduler"),
])
def test_the_refusal_of_a_pndm_pipeline_names_the_scheduler_of_the_studys_solver(solver, scheduler):
    from diffusers import PNDMScheduler

    pndm = PNDMScheduler.from_config(scheduler_config())  # Stable Diffusion 1.5's stock scheduler
    with pytest.raises(ConfigError) as error:
        pipeline_schedule_kwargs([901, 501, 101], pndm, solver=solver)
    message = str(error.value)
    assert message.startswith("PNDMScheduler.set_timesteps takes no custom schedule")
    assert f"give the pipeline the {scheduler} that runs the study's solver" in message
    assert f"scheduler_for_solver('{solver}', pipe.scheduler)" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"with the study's solver \(ddim: DPMSolverMultistepScheduler; .*"
                                          r"euler: EulerDiscreteScheduler; ddpm: DDPMScheduler\)"):
        pipeline_schedule_kwargs([901, 501, 101], pndm)
