"""The fenced private API of torch and diffusers (optuna_diffusion.compat_torch, .compat_diffusers).

Each test checks one assumption a fenced helper makes about the installed library, so a release that
changes it fails here, naming it, instead of silently changing counts or images. (Optuna's fence,
optuna_diffusion.compat, is tested in tests/test_compat.py.)
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FluxPipeline, UniPCMultistepScheduler
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

from optuna_diffusion.compat_diffusers import (
    dropped_from_chain,
    flux_image_ids,
    flux_pack,
    flux_unpack,
    forget_registry,
    forward_below,
    install_schedule,
    relink_replacing_hook,
)
from optuna_diffusion.compat_torch import computed_in_trace
from optuna_diffusion.errors import OptunaDiffusionError

# torch ---------------------------------------------------------------------------------------------


def test_the_trace_tells_computed_values_from_constants():
    cached, seen = torch.ones(2), {}

    def traced(x):
        y = x * 2
        seen["computed"], seen["constant"] = computed_in_trace(y), computed_in_trace(cached)
        return y + cached

    torch.jit.trace(traced, torch.randn(2), check_trace=False)

    assert seen == {"computed": True, "constant": False}


def test_a_torch_without_the_value_trace_is_refused_not_guessed(monkeypatch):
    monkeypatch.delattr(torch._C, "_get_value_trace")
    with pytest.raises(OptunaDiffusionError, match="no torch._C._get_value_trace"):
        computed_in_trace(torch.ones(1))


# diffusers: hook chains --------------------------------------------------------------------------------


class Scale(ModelHook):
    """A hook that replaces the forward (``new_forward``) and calls the chain below it."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def new_forward(self, module, *args, **kwargs):
        return self.fn_ref.original_forward(*args, **kwargs) * self.factor


def test_register_hook_chains_a_replacing_hook_as_the_repairs_assume():
    torch.manual_seed(0)
    layer, x = nn.Linear(3, 3), torch.randn(2, 3)
    plain = layer(x)
    registry = HookRegistry.check_if_exists_or_initialize(layer)
    hook = Scale(2.0)
    registry.register_hook(hook, "scale")

    assert list(registry.hooks) == ["scale"] and not dropped_from_chain(hook)
    assert hook.fn_ref.forward.func == hook.new_forward  # fn_ref.forward = partial(new_forward, module)
    assert torch.equal(forward_below(hook)(x), plain)  # original_forward = the forward below
    assert torch.equal(layer(x), 2 * plain)


def test_remove_hook_still_drops_a_replacing_hook_above_the_removed_one_and_the_repair_puts_it_back():
    torch.manual_seed(0)
    layer, x = nn.Linear(3, 3), torch.randn(2, 3)
    plain = layer(x)
    registry = HookRegistry.check_if_exists_or_initialize(layer)
    first, second = Scale(2.0), Scale(3.0)
    registry.register_hook(first, "first")
    registry.register_hook(second, "second")
    below = forward_below(first)

    registry.remove_hook("first", recurse=False)

    # diffusers 0.42 re-links `second` by overwriting fn_ref.forward: it falls out of the chain. When this
    # fails, diffusers re-links such hooks itself and compat_diffusers.relink_replacing_hook can go.
    assert dropped_from_chain(second) and torch.allclose(layer(x), plain)
    relink_replacing_hook(layer, second, below)
    assert not dropped_from_chain(second) and torch.allclose(layer(x), 3 * plain)


def test_an_emptied_registry_stays_on_the_module_until_forgotten():
    layer = nn.Linear(3, 3)
    registry = HookRegistry.check_if_exists_or_initialize(layer)
    registry.register_hook(Scale(2.0), "scale")
    registry.remove_hook("scale", recurse=False)

    assert not registry.hooks and registry in vars(layer).values() and "forward" in vars(layer)
    forget_registry(layer, registry)
    assert registry not in vars(layer).values() and "forward" not in vars(layer)


# diffusers: scheduler state -------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler_class", [DPMSolverMultistepScheduler, UniPCMultistepScheduler])
def test_a_multistep_scheduler_steps_through_the_installed_timesteps_and_sigmas(scheduler_class):
    timesteps = (901, 501, 101)

    def run(sigmas):
        scheduler = scheduler_class(num_train_timesteps=1000)
        scheduler.set_timesteps(len(timesteps))
        assert len(scheduler.timesteps) == 3 and len(scheduler.sigmas) == 4 and float(scheduler.sigmas[-1]) == 0.0
        install_schedule(scheduler, timesteps, sigmas)
        assert scheduler.timesteps.tolist() == list(timesteps)
        x = torch.ones(1, 2)
        for t in scheduler.timesteps:
            x = scheduler.step(0.5 * x, t, x).prev_sample
        return x

    assert torch.equal(run([4.0, 1.0, 0.2]), run([4.0, 1.0, 0.2]))
    assert not torch.allclose(run([4.0, 1.0, 0.2]), run([3.0, 1.0, 0.2]))  # step() reads the installed sigmas


def test_install_schedule_refuses_a_scheduler_that_holds_another_number_of_steps():
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(4)
    with pytest.raises(RuntimeError, match="holds 4 time steps"):
        install_schedule(scheduler, (901, 501, 101))


# diffusers: Flux packing -------------------------------------------------------------------------------


def test_flux_packing_equals_the_pipelines_private_methods():
    latents = torch.randn(2, 4, 6, 10, generator=torch.Generator().manual_seed(0))
    packed = FluxPipeline._pack_latents(latents, 2, 4, 6, 10)

    assert torch.equal(flux_pack(latents), packed)
    # _unpack_latents takes the image size: latents of 6 x 10 with a VAE scale factor of 8 are 48 x 80 pixels.
    assert torch.equal(flux_unpack(packed, 6, 10), FluxPipeline._unpack_latents(packed, 48, 80, 8))
    assert torch.equal(flux_unpack(packed, 6, 10), latents)
    expected = FluxPipeline._prepare_latent_image_ids(2, 3, 5, torch.device("cpu"), torch.float32)
    assert torch.equal(flux_image_ids(3, 5), expected)


def test_cogvideox_rotary_embeddings_are_the_pipelines_private_method():
    import inspect

    from diffusers import CogVideoXPipeline

    from optuna_diffusion.compat_diffusers import cogvideox_rotary_embeddings

    from .tiny_video_pipelines import tiny_cogvideox

    parameters = list(inspect.signature(CogVideoXPipeline._prepare_rotary_positional_embeddings).parameters)
    assert parameters == ["self", "height", "width", "num_frames", "device"]
    pipe = tiny_cogvideox(rotary=True)
    cos, sin = cogvideox_rotary_embeddings(pipe, 32, 32, 3, torch.device("cpu"))
    assert cos.shape == sin.shape == (3 * 2 * 2, 16)  # latent frames x (32 / 8 / 2)^2 patches, one head's width


def test_wan_keeps_float32_modules_so_from_pretrained_needs_accelerate_and_the_direct_load_matches(tmp_path):
    import importlib.util

    from diffusers import WanTransformer3DModel

    from optuna_diffusion.compat_diffusers import keeps_float32_modules, load_float32_keeping_model

    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=1, out_channels=1,
        text_dim=5, freq_dim=16, ffn_dim=16, num_layers=1, rope_max_seq_len=16,
    )
    model.register_to_config(_sample_shape=[1, 2, 4, 4])
    model.save_pretrained(tmp_path)
    assert keeps_float32_modules(WanTransformer3DModel) and not keeps_float32_modules(nn.Linear)
    if importlib.util.find_spec("accelerate") is None:  # the reason the direct load exists
        with pytest.raises(ValueError, match="low_cpu_mem_usage"):
            WanTransformer3DModel.from_pretrained(tmp_path, low_cpu_mem_usage=False)
    loaded = load_float32_keeping_model(WanTransformer3DModel, tmp_path)
    assert loaded.config["_sample_shape"] == [1, 2, 4, 4]
    assert all(torch.equal(value, loaded.state_dict()[name]) for name, value in model.state_dict().items())


@pytest.mark.parametrize("patch, patch_t", [(1, 1), (2, 1), (2, 3)])
def test_ltx_packing_equals_the_pipelines_private_methods(patch, patch_t):
    from diffusers import LTXPipeline

    from optuna_diffusion.compat_diffusers import ltx_pack, ltx_unpack

    latents = torch.randn(2, 4, 6, 4, 8, generator=torch.Generator().manual_seed(0))
    packed = LTXPipeline._pack_latents(latents, patch, patch_t)

    assert torch.equal(ltx_pack(latents, patch, patch_t), packed)
    grid = (6 // patch_t, 4 // patch, 8 // patch)
    assert torch.equal(ltx_unpack(packed, *grid, patch, patch_t), LTXPipeline._unpack_latents(packed, *grid, patch, patch_t))
    assert torch.equal(ltx_unpack(packed, *grid, patch, patch_t), latents)
