"""The export layer's pipeline call: the Python call that runs a study's plan in the study's pipeline,
checked at export (what ``export --out plan.json`` writes beside the plan as ``plan.py``).

It sits above the loader and the study config, which it reads; the call templates themselves are
:func:`~optuna_diffusion.pipelines.pipeline_call` (the pipeline helpers import nothing above them).
"""

from __future__ import annotations

import diffusers

from .models import model_location, pipeline_index_of
from .pipeline_schedule import pipeline_schedule_kwargs
from .pipelines import FAMILY_OF_PIPELINE, pipeline_call, scheduler_for_solver
from .plan import Plan
from .schedules import schedule_from_config
from .study_config import StudyConfig


def study_pipeline_call(config: StudyConfig, plan: Plan, plan_file: str) -> str | None:
    """The call that runs ``plan`` in the study's pipeline, checked now; None when the model is no pipeline.

    The check is the one the call makes at run time, done at export: the study's (or the plan's) solver
    must be one a diffusers scheduler runs (:func:`~optuna_diffusion.pipelines.scheduler_for_solver`),
    and that scheduler must accept the plan's time steps (:func:`pipeline_schedule_kwargs` runs its
    ``set_timesteps``). Under Flux's dynamic shifting the sigmas depend on ``mu``, which the call computes
    from the image size, so they are checked when it runs.

    Raises:
        ConfigError: the plan cannot run in the pipeline (one line saying why).
    """
    source = config.model.source
    index = pipeline_index_of(source)
    if index is None:
        return None
    pipeline_class = index["_class_name"]
    family = FAMILY_OF_PIPELINE.get(pipeline_class)
    _, scheduler_class = index["scheduler"]
    scheduler = getattr(diffusers, scheduler_class).from_pretrained(
        model_location(source), subfolder="scheduler", local_files_only=True
    )
    solver = plan.solver or config.sampling.solvers(schedule_from_config(scheduler.config).kind)[0]
    runner = scheduler_for_solver(solver, scheduler)
    if family == "dit":
        runner.set_timesteps(timesteps=list(plan.timesteps))
    elif not getattr(runner.config, "use_dynamic_shifting", False):
        pipeline_schedule_kwargs(plan.timesteps, runner)
    prompt = config.prompts.load()[0].text if family != "dit" else "a cat asleep on a green sofa"
    return pipeline_call(
        pipeline_class, source=source, solver=solver,
        guidance_scale=config.sampling.guidance_scale, prompt=prompt, class_labels=(0,), plan_file=plan_file,
    )
