"""Helpers the tests import: tiny randomly initialised UNets, the test schedule, a tiny evaluator, a
MySQL URL with a wrong password. Fixtures stay in ``conftest.py`` (pytest finds them there)."""

from __future__ import annotations

import pytest
import torch


def tiny_unet(num_class_embeds: int | None = 11, prediction_channels: int = 1, seed: int = 0):
    """A 2-level ADM-like UNet2DModel on 8x8 images (attention at 4x4 and in the middle)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=prediction_channels,
        block_out_channels=(16, 32),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=16,
        norm_num_groups=8,
        num_class_embeds=num_class_embeds,
    ).eval()


def tiny_text_unet(seed: int = 0):
    """A 2-level UNet2DConditionModel with cross-attention (context dimension 16) on 4x8x8 latents."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
    ).eval()


def scheduler_config(prediction_type: str = "epsilon") -> dict:
    return dict(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type=prediction_type,
        clip_sample=False,
    )


def baseline_steps(name: str, num_steps: int) -> tuple[int, ...]:
    """Time steps of a hand-designed schedule for the linear-beta test schedule."""
    from optuna_diffusion.baselines import baseline_plan
    from optuna_diffusion.solvers import NoiseSchedule

    alphas_cumprod = NoiseSchedule.from_scheduler_config(scheduler_config()).alphas_cumprod
    return baseline_plan(name, num_steps, alphas_cumprod).timesteps


WRONG_PASSWORD = "wrong-secret-pw"


def mysql_url_with_a_wrong_password() -> str:
    """A MySQL/MariaDB URL whose password the server on 127.0.0.1:3306 rejects; skip the test without one.

    PostgreSQL here trusts every local connection (any password works), so only MariaDB can reject one.
    """
    pymysql = pytest.importorskip("pymysql")
    try:
        pymysql.connect(host="127.0.0.1", port=3306, user="root", password=WRONG_PASSWORD, connect_timeout=5).close()
    except pymysql.err.OperationalError as error:
        if error.args and error.args[0] == 1045:  # ER_ACCESS_DENIED_ERROR: the server checked the password
            return f"mysql+pymysql://root:{WRONG_PASSWORD}@127.0.0.1:3306/test"
        pytest.skip(f"no MySQL/MariaDB server that checks passwords on 127.0.0.1:3306 ({error})")
    pytest.skip("the MySQL/MariaDB server on 127.0.0.1:3306 accepted a wrong password for root")


def tiny_evaluator(model, batch_size: int):
    """A PlanEvaluator of ``model`` with an untrained digits feature net (seeded) and the digits reference."""
    from optuna_diffusion.evaluation import PlanEvaluator
    from optuna_diffusion.reference_stats import reference_stats
    from optuna_diffusion.generation import SamplingSettings
    from optuna_diffusion.zoo.data import load_digits_images
    from optuna_diffusion.zoo.feature_net import DigitsFeatureNet

    torch.manual_seed(0)
    extractor = DigitsFeatureNet().eval()
    images, _ = load_digits_images()
    settings = SamplingSettings(num_classes=10, batch_size=batch_size)
    return PlanEvaluator(model, settings, extractor, reference_stats(images, extractor))
