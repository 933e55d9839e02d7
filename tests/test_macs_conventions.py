"""MACs in both conventions: the project's (attention products counted) and the papers' linear-conv one.

The linear-conv count is checked against a hand count: forward hooks on every ``nn.Linear`` and
``nn.Conv*d`` (one MAC per weight of a filter per output element, plus one per output element for a
bias, as thop counts), attributed, as fvcore does, to every module on the call stack. The full count
is checked to be the same products without the bias terms, plus attention's score and value products,
counted by hand from the shapes ``scaled_dot_product_attention`` receives, plus the norms and
up-sampling fvcore prices.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import optuna
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from optuna_diffusion.blocks import BlockSwitch
from optuna_diffusion.cli import app
from optuna_diffusion.errors import ConfigError
from optuna_diffusion.macs import (
    MACS_CONVENTIONS,
    FvcoreCounter,
    MacsTable,
    count_macs,
    example_inputs,
    input_gradient_macs,
)
from optuna_diffusion.plan import Plan
from optuna_diffusion.zoo.adm_classifier import ADMClassifier, ADMClassifierConfig

from .helpers import tiny_text_unet, tiny_unet
from .tiny_transformers import TINY_TRANSFORMERS, count_kwargs

MODELS = {
    "unet": (tiny_unet, {"class_labels": True}),
    "text_unet": (tiny_text_unet, {"encoder_hidden_states": (3, 16)}),
    **{kind: (make, None) for kind, make in TINY_TRANSFORMERS.items()},
}
# What fvcore prices beyond products (the full convention keeps them, linear-conv drops them).
NORMS_AND_RESAMPLING = {"group_norm", "layer_norm", "batch_norm", "instance_norm", "upsample_nearest2d",
                        "upsample_bilinear2d", "adaptive_avg_pool2d"}
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def hand_count(model: nn.Module, call) -> tuple[Counter, int, Counter, int]:
    """Run ``call()`` and count by hand: linear/conv MACs with bias terms per module path (caller
    attribution), their products without bias over the layers whose input requires grad, attention
    products per module path, and the bias terms in total."""
    assert not any(isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) for m in model.modules())
    names = {module: name for name, module in model.named_modules()}
    stack: list[str] = []
    layers: Counter = Counter()
    attention: Counter = Counter()
    needs_grad = biases = 0

    def enter(module, args):
        stack.append(names[module])

    def leave(module, args, output):
        nonlocal needs_grad, biases
        if isinstance(module, (nn.Linear, *CONVS)):
            products = output.numel() * module.weight[0].numel()  # per output element, its filter's weights
            bias = output.numel() if module.bias is not None else 0
            for name in set(stack):
                layers[name] += products + bias
            biases += bias
            if args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
                needs_grad += products
        stack.pop()

    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting_sdpa(query, key, value, *args, **kwargs):
        products = math.prod(query.shape[:-2]) * query.shape[-2] * key.shape[-2] * (query.shape[-1] + value.shape[-1])
        for name in set(stack):
            attention[name] += products
        return sdpa(query, key, value, *args, **kwargs)

    handles = [m.register_forward_pre_hook(enter) for m in model.modules()]
    handles += [m.register_forward_hook(leave) for m in model.modules()]
    torch.nn.functional.scaled_dot_product_attention = counting_sdpa
    try:
        call()
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
        for handle in handles:
            handle.remove()
    return layers, needs_grad, attention, biases


@pytest.fixture(scope="module", params=list(MODELS))
def counted(request):
    make, kwargs = MODELS[request.param]
    model = make()
    inputs = example_inputs(model, **(kwargs if kwargs is not None else count_kwargs(model)))
    with torch.no_grad():
        layers, _, attention, biases = hand_count(model, lambda: model(**inputs))
    full = FvcoreCounter().count(model, inputs)
    linear_conv = FvcoreCounter("linear-conv").count(model, inputs)
    return model, layers, attention, biases, full, linear_conv


def test_linear_conv_equals_a_hand_sum_over_linear_and_conv_layers(counted):
    model, layers, _, _, _, linear_conv = counted
    assert linear_conv.total == layers[""] > 0
    assert set(linear_conv.by_operator) <= {"conv", "linear"}
    for path, _ in model.named_modules():
        assert linear_conv.by_module.get(path, 0) == layers[path], path or "the model"


def test_full_is_linear_conv_plus_attention_products_norms_and_resampling(counted):
    _, _, attention, biases, full, linear_conv = counted
    assert attention[""] > 0 and biases > 0
    norms = sum(macs for op, macs in full.by_operator.items() if op in NORMS_AND_RESAMPLING)
    assert full.total - attention[""] - norms + biases == linear_conv.total
    assert full.total > linear_conv.total


def test_a_linear_conv_table_prices_skips_as_a_direct_count():
    unet = tiny_unet()
    counter = FvcoreCounter("linear-conv")
    table = MacsTable.for_model(unet, class_labels=True, counter=counter)
    full_table = MacsTable.for_model(unet, class_labels=True)
    assert table.full < full_table.full
    # An attention block saves less in linear-conv: its score and value products are not counted.
    assert table.skip_savings["mid.attn.0"] < full_table.skip_savings["mid.attn.0"]
    switch = BlockSwitch(unet)
    try:
        for skipped in (["mid.attn.0"], ["up.0.resnet.1", "down.1.attn.0"], ["down.0.resnet.0", "up.1.resnet.2"]):
            switch.set_step(skip=skipped)
            assert count_macs(unet, class_labels=True, counter=counter) == table.step_macs(skips=skipped), skipped
    finally:
        switch.remove()
    plan = Plan((900, 500, 100), skips=((), ("mid.attn.0",), ()))
    assert table.plan_macs(plan) == 3 * table.full - table.skip_savings["mid.attn.0"]


def test_linear_conv_input_gradient_counts_the_backward_of_layers_on_the_gradients_path():
    torch.manual_seed(1)
    config = ADMClassifierConfig(
        image_size=8, model_channels=32, num_res_blocks=1, attention_resolutions=(4,), channel_mult=(1, 1),
        num_head_channels=16, num_classes=10,
    )
    classifier = ADMClassifier(config).eval().requires_grad_(False)
    inputs = {"sample": torch.randn(1, 3, 8, 8), "timestep": torch.tensor([500])}
    x = inputs["sample"].clone().requires_grad_(True)
    with torch.enable_grad():
        _, on_path, attention, _ = hand_count(classifier, lambda: classifier(sample=x, timestep=inputs["timestep"]))
    # Without weight gradients each layer's backward computes only its input gradient: as many MACs as its
    # forward products, for the layers the gradient flows through (not the time-step embedding's).
    linear_conv = input_gradient_macs(classifier, inputs, convention="linear-conv")
    assert linear_conv == on_path > 0
    # torch's own count of the whole backward (FlopCounterMode) has besides only attention's backward: two
    # products per forward product, as queries, keys and values all depend on the image.
    assert input_gradient_macs(classifier, inputs) - linear_conv == 2 * attention[""] > 0


def test_a_pipelines_plan_macs_count_every_component_in_the_convention():
    from optuna_diffusion.evaluation import PlanMacs
    from optuna_diffusion.models import model_from_pipeline
    from optuna_diffusion.generation import SamplingSettings

    from .tiny_pipelines import TINY_PIPELINES

    pipe = TINY_PIPELINES["sd"]()
    model = model_from_pipeline(pipe, source="sd")
    settings = SamplingSettings(guidance_scale=5.0)
    pricing = PlanMacs.for_model(model, settings, convention="linear-conv")
    full = PlanMacs.for_model(model, settings)
    with torch.no_grad():
        text, _, _, _ = hand_count(pipe.text_encoder, lambda: pipe.text_encoder(torch.zeros(1, 77, dtype=torch.long)))
        latents = torch.zeros(1, *model.family.latent_shape(model))
        decode, _, _, _ = hand_count(pipe.vae, lambda: pipe.vae.decode(latents))
    decoded = sum(decode[name] for name, _ in pipe.vae.named_children())  # decode() is no call of the vae itself
    # The prompt and the negative prompt are encoded (guidance), the image decoded once.
    assert pricing.per_image == {"text_encoders": 2 * text[""], "vae_decoder": decoded}
    assert all(0 < pricing.per_image[name] < full.per_image[name] for name in full.per_image)
    plan = Plan((900, 400))
    assert pricing.parts(plan)["denoiser"] == 2 * 2 * pricing.table.full  # two steps, twice under guidance
    assert pricing.total(plan) == sum(pricing.parts(plan).values()) < full.total(plan)


def test_an_unknown_convention_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown MACs convention 'thop'; known: full, linear-conv"):
        FvcoreCounter("thop")
    with pytest.raises(ConfigError, match="unknown MACs convention"):
        input_gradient_macs(tiny_unet(), {"sample": torch.zeros(1, 1, 8, 8)}, convention="calflops")
    assert set(MACS_CONVENTIONS) == {"full", "linear-conv"}


# --------------------------------------------------------------------------------------------------
# The commands: evaluate and show report either convention
# --------------------------------------------------------------------------------------------------

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def digits_per_call():
    """MACs of one call of the bundled digits UNet: (full by fvcore, linear-conv by hand)."""
    from optuna_diffusion.models import load_diffusion_model

    unet = load_diffusion_model("digits").denoiser
    inputs = example_inputs(unet, class_labels=True)
    with torch.no_grad():
        layers, _, _, _ = hand_count(unet, lambda: unet(**inputs))
    return FvcoreCounter().count(unet, inputs).total, layers[""]


def _gmacs(output: str) -> float:
    return float(re.search(r"([0-9.]+) GMACs per image", output).group(1))


def test_evaluate_reports_either_convention(digits_per_call):
    full_call, linear_conv_call = digits_per_call
    args = ["evaluate", "--study", "digits", "--baseline", "uniform", "--steps", "3", "--samples", "16"]
    full = invoke(*args)
    linear_conv = invoke(*args, "--macs-convention", "linear-conv")
    assert full.exit_code == linear_conv.exit_code == 0, full.output + linear_conv.output
    assert "counted as" not in full.output and "GMACs per image (counted as linear-conv)" in linear_conv.output
    assert _gmacs(full.output) == pytest.approx(3 * full_call / 1e9, abs=5e-5)
    assert _gmacs(linear_conv.output) == pytest.approx(3 * linear_conv_call / 1e9, abs=5e-5)
    assert _gmacs(linear_conv.output) < _gmacs(full.output)
    bad = invoke(*args, "--macs-convention", "thop")
    assert bad.exit_code == 2 and bad.output == "error: unknown MACs convention 'thop'; known: full, linear-conv\n"


def test_show_reports_either_convention(tmp_path, digits_per_call):
    full_call, linear_conv_call = digits_per_call
    storage = f"sqlite:///{tmp_path / 'digits.db'}"
    ran = invoke("optimize", "--study", "digits", "--storage", storage, "--stage", "timesteps", "--n-trials", "3",
                 "--num-samples", "16", "--batch-size", "16")
    assert ran.exit_code == 0, ran.output
    full = invoke("show", "--study", "digits", "--storage", storage, "--all")
    linear_conv = invoke("show", "--study", "digits", "--storage", storage, "--all", "--macs-convention", "linear-conv")
    assert full.exit_code == linear_conv.exit_code == 0, full.output + linear_conv.output
    assert "counted as linear-conv: convolutions and linear layers only" in linear_conv.output

    def rows(output: str) -> dict[int, tuple[int, float]]:
        lines = [line.split() for line in output.splitlines()[2:] if line.split() and line.split()[0].isdigit()]
        return {int(cells[0]): (int(cells[1]), float(cells[2])) for cells in lines}

    shown_full, shown_linear_conv = rows(full.output), rows(linear_conv.output)
    assert shown_full and set(shown_full) == set(shown_linear_conv)
    study = optuna.load_study(study_name="digits-timesteps", storage=storage)
    for number, (steps, gmacs) in shown_linear_conv.items():  # stage 1 skips nothing: K calls per image
        assert gmacs == pytest.approx(steps * linear_conv_call / 1e9, abs=5e-5)
        assert shown_full[number][1] == pytest.approx(study.trials[number].values[1] / 1e9, abs=5e-5)
        assert shown_full[number][1] == pytest.approx(steps * full_call / 1e9, abs=5e-5)
