"""Presets of real pipelines: each fails fast naming what is missing, and runs on a tiny stand-in of its layout."""

from __future__ import annotations

import optuna
import pytest
from typer.testing import CliRunner

from optuna_diffusion.cli import app

from .stand_ins import stand_in_features
from .tiny_pipelines import STAND_INS

# preset -> image size of its stand-in run (small, so that the test stays quick)
PRESETS = {"sd15": 32, "sdxl": 32, "pixart-sigma": 8, "sd3-medium": 16, "flux-schnell": 16, "dit-xl-256": 8}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_a_pipeline_preset_without_its_files_fails_fast_naming_each(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("optimize", "--study", preset)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "not in the local Hugging Face cache; huggingface-cli download" in result.output
    assert "the reference statistics (--reference NPZ" in result.output and "Inception" in result.output
    assert list(tmp_path.iterdir()) == [], "nothing is written"


@pytest.mark.parametrize(
    "preset", [pytest.param(p, marks=pytest.mark.slow) if p in ("sdxl", "flux-schnell") else p for p in PRESETS]
)
def test_a_pipeline_preset_runs_on_a_stand_in_of_its_layout(preset, tmp_path):
    model = STAND_INS[preset](tmp_path / "pipeline")
    size = PRESETS[preset]
    features, reference = stand_in_features(tmp_path, size)
    storage = f"sqlite:///{tmp_path / 'preset.db'}"
    result = invoke(
        "optimize", "--study", preset, "--storage", storage, "--model", str(model), "--image-size", str(size),
        "--features", features, "--reference", reference, "--stage", "timesteps", "--n-trials", "2",
        "--num-samples", "4", "--batch-size", "4",
        # sdxl's float16 runs its UNet at a crawl on a CPU (2 minutes here); the float32 decode it needs is
        # checked where the model loads (test_models.py), the preset's other settings here.
        *(["--dtype", "float32"] if preset == "sdxl" else []),
    )
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name=f"{preset}-timesteps", storage=storage)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) and len(study.trials) == 2
    fixed = study.user_attrs.get("optuna_diffusion:fixed_macs", {})
    assert fixed.get("vae_decoder", 0) > 0, "a latent pipeline pays its VAE decode per image"
    assert (fixed.get("text_encoders", 0) > 0) == (preset != "dit-xl-256"), "text pipelines pay their encoders"
    assert all(t.user_attrs["macs"] > sum(fixed.values()) for t in study.trials)
    exported = invoke("export", "--study", preset, "--storage", storage, "--out", str(tmp_path / "plan.json"))
    assert exported.exit_code == 0, exported.output
    call = (tmp_path / "plan.py").read_text()
    assert f'from_pretrained("{model}")' in call and "apply(pipe, plan)" in call
    compile(call, "plan.py", "exec")
    if preset in ("sd15", "dit-xl-256"):  # run the written call as is on the stand-in (the others: test_reference_snippets)
        import runpy

        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(tmp_path)
            images = runpy.run_path(str(tmp_path / "plan.py"))["images"]
        assert images[0].size == (size, size)  # the study's image size (tests/test_plan_py.py: its samples)


def test_export_names_why_a_plan_cannot_run_in_its_pipeline(tmp_path):
    from optuna_diffusion.errors import ConfigError
    from optuna_diffusion.export_call import study_pipeline_call
    from optuna_diffusion.plan import Plan
    from optuna_diffusion.study_config import load_study_config, with_overrides

    model = STAND_INS["sd15"](tmp_path / "pipeline")
    config = with_overrides(load_study_config("sd15"), model=str(model), solver="unipc")
    with pytest.raises(ConfigError, match="no diffusers scheduler runs solver 'unipc'"):
        study_pipeline_call(config, Plan((901, 501, 101)), "plan.json")
    assert study_pipeline_call(load_study_config("digits"), Plan((901, 501, 101)), "plan.json") is None
