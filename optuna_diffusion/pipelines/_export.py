"""Run a plan in the diffusers pipeline itself, with the images the project makes.

Three things make ``pipe(...)`` sample exactly what the engine samples:

1. the pipeline's scheduler runs the plan's solver: :func:`scheduler_for_solver` (``pipe.scheduler =
   scheduler_for_solver(solver, pipe.scheduler)``);
2. the denoiser skips and reuses the plan's blocks: ``apply(pipe, plan)``;
3. the call gets the plan's time steps (:func:`~optuna_diffusion.pipelines.pipeline_schedule_kwargs`),
   the engine's initial latents (``model.family.initial_noise(model, seed, start, stop)``), its prompts and
   negative prompts (``prompts.texts(start, stop)``, ``prompts.negatives(start, stop)``), its guidance scale
   and image size.

The tests in ``tests/test_pipelines.py`` (``test_export_*``) hold one such call per pipeline family.

Which of the project's solvers a pipeline's scheduler can run (diffusers 0.42):

============== ================================================ ==============================================
solver         pipeline scheduler                               notes
============== ================================================ ==============================================
ddim           ``DPMSolverMultistepScheduler`` (dpmsolver++,   ``timesteps=``; first-order DPM-Solver++
               order 1, final sigma 0)                          is DDIM
dpmpp-2m       ``DPMSolverMultistepScheduler`` (dpmsolver++,   ``timesteps=``
               order 2, final sigma 0)
euler          ``EulerDiscreteScheduler`` (final sigma 0,       ``timesteps=``
               linspace spacing)
ddpm           ``DDPMScheduler`` (fixed_small variance)         ``timesteps=``; stochastic: pass
                                                                ``generator=torch.Generator().manual_seed(seed
                                                                * 7 + start)``
flow-euler     ``FlowMatchEulerDiscreteScheduler`` (its own     ``sigmas=`` (and ``mu`` under dynamic
               shift)                                           shifting)
unipc,         none                                             UniPC and flow DPM-Solver do not keep a
flow-dpmpp-2m,                                                  plan's time steps
flow-unipc
============== ================================================ ==============================================
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..solvers import SOLVERS

SCHEDULER_OF_SOLVER = {
    "ddim": "DPMSolverMultistepScheduler",
    "dpmpp-2m": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddpm": "DDPMScheduler",
    "flow-euler": "FlowMatchEulerDiscreteScheduler",
}
"""The diffusers scheduler that runs each exportable solver (:func:`scheduler_for_solver` configures it)."""
_EXPORTABLE = tuple(SCHEDULER_OF_SOLVER)


def _config(scheduler: Any) -> dict[str, Any]:
    if not hasattr(scheduler, "config"):
        raise ConfigError(f"expected a diffusers scheduler (pipe.scheduler), got {type(scheduler).__name__}")
    return {key: value for key, value in dict(scheduler.config).items() if not key.startswith("_")}


def scheduler_for_solver(solver: str, scheduler: Any) -> Any:
    """A scheduler for the pipeline that runs the project's ``solver`` on the pipeline's noise schedule.

    Args:
        solver: ``"ddim"``, ``"dpmpp-2m"``, ``"euler"``, ``"ddpm"`` (DDPM-style models) or ``"flow-euler"``
            (flow matching).
        scheduler: the pipeline's scheduler (``pipe.scheduler``), whose betas or shift are kept.

    Returns:
        A new scheduler; set it as ``pipe.scheduler`` and call the pipeline with
        ``pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler)``.
    """
    from diffusers import (
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        FlowMatchEulerDiscreteScheduler,
    )

    if solver not in SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if solver not in _EXPORTABLE:
        raise ConfigError(
            f"no diffusers scheduler runs solver {solver!r} on a plan's time steps; export plans of "
            f"{', '.join(_EXPORTABLE)}"
        )
    config = _config(scheduler)
    # As the project's solvers drive these schedulers (optuna_diffusion.solvers).
    if solver in ("ddim", "dpmpp-2m"):
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=1 if solver == "ddim" else 2, final_sigmas_type="zero",
            thresholding=False,
        )
    if solver == "euler":
        return EulerDiscreteScheduler.from_config(config, final_sigmas_type="zero", timestep_spacing="linspace")
    if solver == "ddpm":
        return DDPMScheduler.from_config(config, variance_type="fixed_small", clip_sample=False, thresholding=False)
    return FlowMatchEulerDiscreteScheduler.from_config(config, stochastic_sampling=False)
