"""Training another digits model: the noise schedule and prediction type of ``zoo train digits``."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from optuna_diffusion.cli import app
from optuna_diffusion.models import load_diffusion_model
from optuna_diffusion.zoo.training import DiffusionTraining, train_diffusion_model, training_target


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_the_training_target_gives_back_x0_and_the_noise(prediction_type):
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 1, 8, 8, generator=generator), torch.randn(4, 1, 8, 8, generator=generator)
    alpha_prod = torch.tensor([0.9, 0.5, 0.1, 0.01]).view(-1, 1, 1, 1)
    noisy = alpha_prod.sqrt() * x0 + (1 - alpha_prod).sqrt() * noise
    target = training_target(prediction_type, x0, noise, alpha_prod)
    if prediction_type == "v_prediction":  # x0 = sqrt(a) x_t - sqrt(1 - a) v
        torch.testing.assert_close(alpha_prod.sqrt() * noisy - (1 - alpha_prod).sqrt() * target, x0)
    else:
        torch.testing.assert_close(target, noise if prediction_type == "epsilon" else x0)


def test_a_cosine_v_prediction_model_loads_with_its_schedule(tmp_path):
    train_diffusion_model(tmp_path, DiffusionTraining(steps=2, batch_size=4, beta_schedule="squaredcos_cap_v2",
                                                      prediction_type="v_prediction"), log=lambda _: None)
    model = load_diffusion_model(str(tmp_path))
    assert model.schedule.prediction_type == "v_prediction"
    cosine = model.schedule.alphas_cumprod
    assert 0.0 < float(cosine[-1]) < 1e-4 and float(cosine[499]) == pytest.approx(0.5, abs=0.03)  # cosine: half at midway


@pytest.mark.parametrize("option", [("--beta-schedule", "cosine"), ("--prediction-type", "velocity")])
def test_zoo_train_refuses_an_unknown_schedule_or_prediction_in_one_line(tmp_path, option):
    result = CliRunner().invoke(app, ["zoo", "train", "digits", "--out", str(tmp_path), *option])
    assert result.exit_code == 2 and option[0] in result.output and not list(tmp_path.iterdir())


def test_zoo_train_keeps_schedule_options_to_digits(tmp_path):
    result = CliRunner().invoke(app, ["zoo", "train", "digits-dit", "--out", str(tmp_path), "--prediction-type", "v_prediction"])
    assert result.exit_code == 2 and "digits only" in result.output
