"""The paper's presets: each fails fast naming what is missing, and runs on tiny local stand-ins of its layout.

A stand-in is a random guided-diffusion checkpoint (and classifier) with the preset's structural flags at
tiny width, converted by the project's own commands; FID is measured with a small TorchScript feature
network against statistics of random images, since Inception weights cannot be downloaded here.
"""

from __future__ import annotations

import dataclasses
import json

import optuna
import pytest
import torch
from typer.testing import CliRunner

from optuna_diffusion.cli import app
from optuna_diffusion.zoo.adm_classifier import CLASSIFIER_PRESETS
from optuna_diffusion.zoo.convert_adm import ADM_PRESETS, random_adm_state_dict
from optuna_diffusion.zoo.convert_adm_classifier import random_classifier_state_dict

from .stand_ins import stand_in_features

# preset -> (ADM UNet flags, classifier flags or None)
PRESETS = {
    "imagenet64": ("imagenet64", "imagenet64"),
    "imagenet64-conditional": ("imagenet64", None),
    "imagenet256": ("imagenet256", "imagenet256"),
    "lsun-bedroom256": ("lsun256", None),
}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("preset", [*PRESETS, "imagenet128"])
def test_a_paper_preset_without_its_files_fails_fast_naming_each(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("optimize", "--study", preset)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    message = result.output
    assert "the model (--model DIR; " in message and "zoo convert-adm" in message
    assert "the reference statistics (--reference NPZ; " in message and "VIRTUAL_" in message
    assert "Inception" in message
    guided = preset != "imagenet64-conditional" and preset != "lsun-bedroom256"
    assert ("the classifier (--classifier DIR; optuna-diffusion zoo convert-adm-classifier" in message) == guided
    assert list(tmp_path.iterdir()) == [], "nothing is written"


def tiny(config, **changes):
    return dataclasses.replace(config, **changes)


def converted_unet(folder, flags: str) -> str:
    config = tiny(ADM_PRESETS[flags], image_size=8, num_channels=32, num_head_channels=32, channel_mult=(1, 2),
                  attention_resolutions=(4,), num_res_blocks=1)
    torch.save(random_adm_state_dict(config, seed=0), folder / "unet.pt")
    (folder / "unet-arch.json").write_text(json.dumps(config.to_dict()))
    result = invoke("zoo", "convert-adm", str(folder / "unet.pt"), "--out", str(folder / "adm"),
                    "--arch", str(folder / "unet-arch.json"))
    assert result.exit_code == 0, result.output
    return str(folder / "adm")


def converted_classifier(folder, flags: str) -> str:
    config = tiny(CLASSIFIER_PRESETS[flags], image_size=8, model_channels=32, num_res_blocks=1, channel_mult=(1, 1),
                  attention_resolutions=(4,), num_head_channels=16)
    torch.save(random_classifier_state_dict(config, seed=1), folder / "classifier.pt")
    (folder / "classifier-arch.json").write_text(json.dumps(config.to_dict()))
    result = invoke("zoo", "convert-adm-classifier", str(folder / "classifier.pt"), "--out", str(folder / "clf"),
                    "--arch", str(folder / "classifier-arch.json"))
    assert result.exit_code == 0, result.output
    return str(folder / "clf")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_a_paper_preset_runs_on_stand_ins_of_its_layout(preset, tmp_path):
    unet_flags, classifier_flags = PRESETS[preset]
    features, reference = stand_in_features(tmp_path)
    args = ["--model", converted_unet(tmp_path, unet_flags), "--reference", reference, "--features", features]
    if classifier_flags:
        args += ["--classifier", converted_classifier(tmp_path, classifier_flags)]
    storage = f"sqlite:///{tmp_path / 'paper.db'}"
    result = invoke("optimize", "--study", preset, "--storage", storage, *args, "--stage", "timesteps",
                    "--n-trials", "2", "--num-samples", "4", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name=f"{preset}-timesteps", storage=storage).trials
    assert [len(t.user_attrs["timesteps"]) for t in trials] == [4, 4]  # the paper's 4 steps
    assert {t.user_attrs["dtype"] for t in trials} == {"float16"}  # as guided-diffusion samples (use_fp16)
    macs = {t.user_attrs["macs"] for t in trials}
    assert len(macs) == 1 and macs.pop() > 0


def test_the_published_128x128_layout_is_refused_with_its_reason(tmp_path):
    config = tiny(ADM_PRESETS["imagenet128"], image_size=8, num_channels=32, channel_mult=(1, 2),
                  attention_resolutions=(8, 4), num_res_blocks=1)  # num_heads = 4 over widths 32 and 64
    torch.save(random_adm_state_dict(config, seed=0), tmp_path / "unet.pt")
    (tmp_path / "arch.json").write_text(json.dumps(config.to_dict()))
    result = invoke("zoo", "convert-adm", str(tmp_path / "unet.pt"), "--out", str(tmp_path / "adm"),
                    "--arch", str(tmp_path / "arch.json"))
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "head width differ per level" in result.output and not (tmp_path / "adm").exists()
