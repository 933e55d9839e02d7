"""Presets of video pipelines: each fails fast naming what is missing, and runs on a tiny stand-in of its layout."""

from __future__ import annotations

import optuna
import pytest
from typer.testing import CliRunner

from optuna_diffusion.cli import app

from .tiny_video_pipelines import VIDEO_STAND_INS

# preset -> (image size, frames) of its stand-in run (small, so that the test stays quick)
PRESETS = {"wan2.1-t2v-1.3b": (16, 5), "cogvideox-2b": (16, 9), "ltx-video": (32, 5)}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_a_video_preset_without_its_files_fails_fast(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = invoke("optimize", "--study", preset)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "not in the local Hugging Face cache; huggingface-cli download" in result.output
    assert list(tmp_path.iterdir()) == [], "nothing is written"


@pytest.mark.slow  # about 30 s: the teacher's 50-step videos, then two trials
@pytest.mark.parametrize("preset", list(PRESETS))
def test_a_video_preset_runs_on_a_stand_in_of_its_layout(preset, tmp_path):
    if preset.startswith("wan"):
        pytest.importorskip("accelerate", reason="diffusers loads Wan's transformer only with accelerate")
    model = VIDEO_STAND_INS[preset](tmp_path / "pipeline")
    size, frames = PRESETS[preset]
    storage = f"sqlite:///{tmp_path / 'preset.db'}"
    result = invoke(
        "optimize", "--study", preset, "--storage", storage, "--model", str(model), "--image-size", str(size),
        "--num-frames", str(frames), "--stage", "timesteps", "--n-trials", "2", "--num-samples", "2",
        "--batch-size", "2",
    )
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name=f"{preset}-timesteps", storage=storage)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) and len(study.trials) == 2
    fixed = study.user_attrs.get("optuna_diffusion:fixed_macs", {})
    assert fixed.get("vae_decoder", 0) > 0 and fixed.get("text_encoders", 0) > 0
    assert all(t.user_attrs["macs"] > sum(fixed.values()) for t in study.trials)
    assert all(t.values[0] < 0 for t in study.trials), "fitness is -PSNR of the frames to the teacher's"
    exported = invoke("export", "--study", preset, "--storage", storage, "--out", str(tmp_path / "plan.json"))
    assert exported.exit_code == 0, exported.output
    call = (tmp_path / "plan.py").read_text()
    assert f'from_pretrained("{model}")' in call and "apply(pipe, plan)" in call
    assert f"study_num_frames(pipe, {frames})" in call and f"study_image_size(pipe, {size})" in call
    import runpy

    with pytest.MonkeyPatch.context() as patch:  # the written call, run as is on the stand-in
        patch.chdir(tmp_path)
        made = runpy.run_path(str(tmp_path / "plan.py"))["frames"]
    assert len(made) == 2 and len(made[0]) == frames  # the study's first batch, its frame count
