"""The ``plan.py`` that ``export`` writes for a video study, run as written, makes the study's own first videos.

As ``tests/test_plan_py.py`` for images: a tiny random pipeline of each video family is saved, a study is set
up on it (image size, frame count, solver, guidance, seed, prompts), the plan and its ``plan.py`` are written
as ``export`` does, and the frames ``plan.py`` makes are compared with the project's frames of the same
samples to one level of 8 bits (the pipelines' outputs are 8-bit frames or floats in [0, 1]).
"""

from __future__ import annotations

import dataclasses
import json
import runpy

import numpy as np
import pytest
import torch

from optuna_diffusion.export_call import study_pipeline_call
from optuna_diffusion.generation import ImageGenerator
from optuna_diffusion.models import load_diffusion_model
from optuna_diffusion.plan import Plan
from optuna_diffusion.study_config import load_study_config, with_overrides

from .tiny_video_pipelines import tiny_cogvideox, tiny_ltx, tiny_wan
from .video_checks import DDPM_STEPS, FLOW_STEPS

# case: (preset, stand-in, overrides, plan steps)
CASES = {
    "wan": ("wan2.1-t2v-1.3b", tiny_wan, dict(image_size=16, num_frames=5), FLOW_STEPS),
    "cogvideox": ("cogvideox-2b", tiny_cogvideox, dict(image_size=16, num_frames=9), DDPM_STEPS),
    "ltx-video": ("ltx-video", tiny_ltx, dict(image_size=32, num_frames=5), FLOW_STEPS),
}


def project_frames(config, plan, count):
    model = load_diffusion_model(config.model.source, image_size=config.model.image_size,
                                 num_frames=config.model.num_frames)
    with ImageGenerator(model, config.sampling, prompts=config.prompts.load()) as generator:
        batches = generator.batches(plan, config.timesteps.num_samples, stop=count, batch_size=config.sampling.batch_size)
        return torch.cat(list(batches))


def as_bytes(frames) -> np.ndarray:
    """A pipeline's ``.frames`` (8-bit PIL frames, or floats in [0, 1]) as uint8 ``(N, F, H, W, C)``."""
    if isinstance(frames, np.ndarray):
        return (frames * 255).round().astype(np.uint8)
    return np.stack([np.stack([np.asarray(frame) for frame in video]) for video in frames])


@pytest.mark.parametrize("case", list(CASES))
def test_plan_py_as_written_makes_the_studys_first_videos(case, tmp_path, monkeypatch):
    if case == "wan":
        pytest.importorskip("accelerate", reason="diffusers loads Wan's transformer only with accelerate")
    preset, stand_in, overrides, steps = CASES[case]
    folder = tmp_path / "pipeline"
    stand_in().save_pretrained(folder, safe_serialization=True)
    config = with_overrides(load_study_config(preset), model=str(folder), num_samples=8, batch_size=2, **overrides)
    config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, seed=3))
    kind = "flow" if steps == FLOW_STEPS else "ddpm"
    plan = Plan(steps, schedule_kind=kind, solver=config.sampling.solvers(kind)[0])
    (tmp_path / "plan.json").write_text(json.dumps({"plan": plan.to_dict()}))
    (tmp_path / "plan.py").write_text(study_pipeline_call(config, plan, "plan.json", stage="timesteps"))

    monkeypatch.chdir(tmp_path)
    theirs = as_bytes(runpy.run_path(str(tmp_path / "plan.py"))["frames"])

    ours = project_frames(config, plan, len(theirs))
    ours = (ours.clamp(-1, 1) / 2 + 0.5).permute(0, 1, 3, 4, 2).mul(255).round().to(torch.uint8).numpy()
    assert theirs.shape == ours.shape == (2, overrides["num_frames"], overrides["image_size"], overrides["image_size"], 3)
    assert np.abs(theirs.astype(int) - ours.astype(int)).max() <= 1
