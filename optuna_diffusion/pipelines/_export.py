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

Which of the project's solvers a pipeline's scheduler can run, and with which settings, is each solver's
record (:data:`optuna_diffusion.solvers.SOLVER_RECORDS`: ``scheduler`` and ``scheduler_settings``; diffusers
0.42). ``ddim`` runs as first-order DPM-Solver++; DDPM-style solvers take ``timesteps=``, ``flow-euler``
takes ``sigmas=`` (and ``mu`` under dynamic shifting). The stochastic ``ddpm`` needs the engine's noise:
pass ``generator=torch.Generator().manual_seed(seed * 7 + start)``. UniPC and flow DPM-Solver have no
scheduler: theirs do not keep a plan's time steps.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..schedules import stock_scheduler_config
from ..solvers import SOLVER_RECORDS


def _config(scheduler: Any) -> dict[str, Any]:
    if not hasattr(scheduler, "config"):
        raise ConfigError(f"expected a diffusers scheduler (pipe.scheduler), got {type(scheduler).__name__}")
    # CogVideoX's SNR-shifted levels as trained_betas, which the solver's stock scheduler reads.
    return stock_scheduler_config({key: value for key, value in dict(scheduler.config).items() if not key.startswith("_")})


def scheduler_for_solver(solver: str, scheduler: Any) -> Any:
    """A scheduler for the pipeline that runs the project's ``solver`` on the pipeline's noise schedule.

    It is the solver record's ``scheduler`` class with its ``scheduler_settings``, on the pipeline
    scheduler's config (so betas, shift and prediction type are kept).

    Args:
        solver: an exportable solver (its :data:`~optuna_diffusion.solvers.SOLVER_RECORDS` record names a
            ``scheduler``): ``"ddim"``, ``"dpmpp-2m"``, ``"euler"``, ``"ddpm"`` or ``"flow-euler"``.
        scheduler: the pipeline's scheduler (``pipe.scheduler``), whose betas or shift are kept.

    Returns:
        A new scheduler; set it as ``pipe.scheduler`` and call the pipeline with
        ``pipeline_schedule_kwargs(plan.timesteps, pipe.scheduler)``.
    """
    record = SOLVER_RECORDS.get(solver)
    if record is None:
        raise ConfigError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVER_RECORDS)}")
    if not record.exportable:
        exportable = [name for name, r in SOLVER_RECORDS.items() if r.exportable]
        raise ConfigError(
            f"no diffusers scheduler runs solver {solver!r} on a plan's time steps; export plans of "
            f"{', '.join(exportable)}"
        )
    return record.scheduler_class().from_config(_config(scheduler), **record.scheduler_settings)
