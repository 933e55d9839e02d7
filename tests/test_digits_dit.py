"""The bundled flow-matching digits DiT: loading, seeded generation, its training code and its preset."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from optuna_diffusion.baselines import baseline_plan
from optuna_diffusion.evaluation import DIGITS_DIT_SETTINGS
from optuna_diffusion.models import load_diffusion_model
from optuna_diffusion.generation import ImageGenerator
from optuna_diffusion.zoo import bundled_model_path
from optuna_diffusion.zoo.data import NULL_CLASS, NUM_CLASSES
from optuna_diffusion.zoo.dit_training import DiTTraining, train_digits_dit

TINY = dict(width=16, heads=2, layers=2, patch_size=2, steps=3, batch_size=8, warmup_steps=1)


def test_bundled_dit_loads_with_from_pretrained_in_float32():
    from diffusers import DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler

    folder = bundled_model_path("digits-dit")
    model = DiTTransformer2DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=torch.float32)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.config.num_embeds_ada_norm == NUM_CLASSES and model.config.sample_size == 8
    assert model.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.num_embeddings == NULL_CLASS + 1
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    assert scheduler.config.num_train_timesteps == 1000
    weights = list(folder.rglob("*.safetensors"))
    assert [w.parent.name for w in weights] == ["transformer"]
    assert weights[0].stat().st_size <= 3 * 1024 * 1024


def test_bundled_dit_loads_through_the_project_loader():
    model = load_diffusion_model("digits-dit")
    assert type(model.denoiser).__name__ == "DiTTransformer2DModel" and model.family.name == "dit"
    assert model.schedule.kind == "flow" and model.sample_shape == (1, 8, 8)
    assert {p.dtype for p in model.denoiser.parameters()} == {torch.float32}
    training = json.loads((bundled_model_path("digits-dit") / "training.json").read_text())
    assert training["dit"]["seconds"] > 0 and training["threads"] >= 1


def test_bundled_dit_two_step_generation_is_deterministic_under_a_seed():
    model = load_diffusion_model("digits-dit")
    settings = dataclasses.replace(DIGITS_DIT_SETTINGS, batch_size=8)
    plan = baseline_plan("uniform", 2, model.schedule)

    def images(seed: int) -> torch.Tensor:
        with ImageGenerator(model, dataclasses.replace(settings, seed=seed)) as generator:
            return torch.cat(list(generator.batches(plan, 12)))

    first, again, other = images(0), images(0), images(1)
    assert first.shape == (12, 1, 8, 8) and torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_training_writes_a_loadable_folder_with_float16_weights_and_its_settings(tmp_path):
    from safetensors import safe_open

    report = train_digits_dit(tmp_path, DiTTraining(**TINY), log=lambda _: None)
    assert report["dit"]["steps"] == 3 and report["dit"]["width"] == 16 and report["dit"]["seconds"] >= 0
    assert report["torch"] == torch.__version__ and report["threads"] == torch.get_num_threads()
    assert json.loads((tmp_path / "training.json").read_text()) == report
    with safe_open(str(tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as stored:
        assert {stored.get_tensor(name).dtype for name in stored.keys()} == {torch.float16}
    model = load_diffusion_model(str(tmp_path))
    assert {p.dtype for p in model.denoiser.parameters()} == {torch.float32}
    assert model.schedule.kind == "flow" and model.denoiser.config.patch_size == 2


def test_training_is_seeded(tmp_path):
    first = train_digits_dit(tmp_path / "a", DiTTraining(**TINY, weights_dtype="float32"), log=lambda _: None)
    again = train_digits_dit(tmp_path / "b", DiTTraining(**TINY, weights_dtype="float32"), log=lambda _: None)
    assert first["dit"]["parameters"] == again["dit"]["parameters"]
    a = load_diffusion_model(str(tmp_path / "a")).denoiser.state_dict()
    b = load_diffusion_model(str(tmp_path / "b")).denoiser.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(width=10, heads=4), "multiple of `heads`"),
        (dict(patch_size=3), "patch_size"),
        (dict(steps=0), "`steps`"),
        (dict(label_dropout=1.0), "label_dropout"),
        (dict(timestep_sampling="beta"), "timestep_sampling"),
        (dict(weights_dtype="int8"), "weights_dtype"),
    ],
)
def test_training_settings_are_checked(bad, message):
    with pytest.raises(ValueError, match=message):
        DiTTraining(**bad)


def test_preset_runs_a_flow_plan_on_the_bundled_dit():
    from optuna_diffusion.study import build_evaluator
    from optuna_diffusion.study_config import load_study_config

    config = load_study_config("digits-dit")
    assert config.model.source == "digits-dit" and config.sampling.solver == "flow-euler"
    config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, batch_size=16, prefix_cache_mb=0))
    evaluator = build_evaluator(config)
    result = evaluator.evaluate(baseline_plan("uniform", 2, evaluator.generator.schedule), 16)
    evaluator.close()
    assert result.ok and result.fid > 0 and result.macs == 2 * evaluator.macs_table.full


def test_zoo_train_digits_dit_writes_a_loadable_model_folder(tmp_path):
    from typer.testing import CliRunner

    from optuna_diffusion.cli import app

    result = CliRunner().invoke(app, ["zoo", "train", "digits-dit", "--out", str(tmp_path), "--steps", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "training.json").read_text())
    assert report["dit"]["steps"] == 2 and report["dit"]["weights_dtype"] == "float16"
    model = load_diffusion_model(str(tmp_path))
    assert model.family.name == "dit" and model.sample_shape == (1, 8, 8)
    bad = CliRunner().invoke(app, ["zoo", "train", "digits-vit", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "digits-dit" in bad.output
