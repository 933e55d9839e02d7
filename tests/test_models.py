import pytest
import torch

from optuna_diffusion.errors import ModelLoadError
from optuna_diffusion.fid import load_feature_extractor
from optuna_diffusion.models import load_diffusion_model
from optuna_diffusion.solvers import NoiseSchedule
from optuna_diffusion.zoo.data import load_digits_images
from optuna_diffusion.zoo.training import digits_unet_config, feature_net_accuracy

from .helpers import scheduler_config, tiny_unet


def _x0_error(unet, schedule, images, labels, t):
    """Mean squared error of the one-step x0 prediction at time step t (seeded noise)."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    alpha_prod_t = schedule.alpha_prod(t).float()
    x_t = alpha_prod_t.sqrt() * images + (1 - alpha_prod_t).sqrt() * noise
    with torch.inference_mode():
        eps = unet(x_t, torch.tensor(t), class_labels=labels).sample
    x0 = (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    return (x0 - images).pow(2).mean().item()


def test_bundled_digits_model_loads_and_denoises():
    model = load_diffusion_model("digits")
    config = model.denoiser.config
    assert type(model.denoiser).__name__ == "UNet2DModel"
    assert config.num_class_embeds == 11 and config.layers_per_block >= 2
    assert config.down_block_types[-1].startswith("Attn") and model.sample_shape == (1, 8, 8)
    assert model.scheduler_config["num_train_timesteps"] == 1000
    assert model.scheduler_config["beta_start"] == pytest.approx(1e-4)
    assert model.scheduler_config["beta_end"] == pytest.approx(0.02)
    schedule = NoiseSchedule.from_scheduler_config(model.scheduler_config)
    images, labels = load_digits_images()
    images, labels = images[:256], labels[:256]
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    untrained = UNet2DModel(**digits_unet_config()).eval()
    for t in (200, 400):
        trained_error = _x0_error(model.denoiser, schedule, images, labels, t)
        untrained_error = _x0_error(untrained, schedule, images, labels, t)
        assert trained_error < 0.1 * untrained_error, (t, trained_error, untrained_error)


def test_bundled_weights_are_small_safetensors():
    from optuna_diffusion.zoo import bundled_model_path

    folder = bundled_model_path("digits")
    files = list(folder.rglob("*.safetensors"))
    assert {f.parent.name for f in files} == {"unet", "features"}
    assert sum(f.stat().st_size for f in files) <= 5 * 1024 * 1024


def test_feature_net_accuracy_on_the_held_out_split():
    assert feature_net_accuracy(load_feature_extractor("digits")) >= 0.97


def test_local_folder_in_pipeline_and_flat_layouts(tmp_path):
    from diffusers import DDPMScheduler

    unet = tiny_unet()
    unet.save_pretrained(tmp_path / "pipeline" / "unet")
    DDPMScheduler(**scheduler_config()).save_pretrained(tmp_path / "pipeline" / "scheduler")
    unet.save_pretrained(tmp_path / "flat")
    DDPMScheduler(**scheduler_config()).save_pretrained(tmp_path / "flat")
    x = torch.randn(1, 1, 8, 8)
    for layout in ("pipeline", "flat"):
        model = load_diffusion_model(str(tmp_path / layout))
        with torch.inference_mode():
            torch.testing.assert_close(model.denoiser(x, 10, class_labels=torch.tensor([1])).sample, unet(x, 10, class_labels=torch.tensor([1])).sample)


def test_folder_missing_its_weights_is_a_one_line_error(tmp_path):
    from diffusers import DDPMScheduler

    tiny_unet().save_pretrained(tmp_path / "unet")
    DDPMScheduler(**scheduler_config()).save_pretrained(tmp_path / "scheduler")
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as error:
        load_diffusion_model(str(tmp_path))
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)


def test_missing_local_folder_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_diffusion_model(str(tmp_path / "nope"))


def test_offline_hub_id_names_the_id_and_the_local_folder_remedy(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(ModelLoadError) as error:
        load_diffusion_model("google/ddpm-cifar10-32")
    message = str(error.value)
    assert "'google/ddpm-cifar10-32'" in message and "pass the folder" in message and "\n" not in message


def test_hub_loading_code_reads_a_populated_cache(monkeypatch, tmp_path):
    """The hub path is real code: with the files in the Hugging Face cache layout it loads offline."""
    from diffusers import DDPMScheduler

    snapshot = tmp_path / "hub" / "models--someone--tiny-ddpm" / "snapshots" / ("a" * 40)
    tiny_unet().save_pretrained(snapshot / "unet")
    DDPMScheduler(**scheduler_config()).save_pretrained(snapshot / "scheduler")
    (tmp_path / "hub" / "models--someone--tiny-ddpm" / "refs").mkdir(parents=True)
    (tmp_path / "hub" / "models--someone--tiny-ddpm" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = load_diffusion_model("someone/tiny-ddpm", local_files_only=True)
    assert model.source == "someone/tiny-ddpm" and model.num_train_timesteps == 1000


@pytest.mark.parametrize("preset", ["sdxl", "sd15"])
def test_a_float16_pipeline_decodes_in_float32_only_where_its_pipeline_does(preset, tmp_path):
    from .tiny_pipelines import STAND_INS

    model = load_diffusion_model(str(STAND_INS[preset](tmp_path / preset)), dtype=torch.float16)
    assert model.denoiser.dtype == torch.float16
    # SDXL's VAE overflows in float16, so its pipeline decodes in float32 (force_upcast); SD 1.5's does not.
    assert next(model.vae.parameters()).dtype == (torch.float32 if preset == "sdxl" else torch.float16)
