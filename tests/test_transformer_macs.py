"""MACs of diffusers transformers: example inputs, per-block savings against direct counts, and a
cross-check of the fvcore (JIT trace) counts against torch's own FlopCounterMode."""

import json
import random

import pytest
import torch

from optuna_diffusion.blocks import BlockSwitch, find_blocks
from optuna_diffusion.errors import ConfigError, OptunaDiffusionError
from optuna_diffusion.macs import (
    FvcoreCounter,
    MacsCount,
    MacsTable,
    count_macs,
    example_inputs,
    macs_analysis,
)
from optuna_diffusion.plan import Plan

from .helpers import tiny_text_unet, tiny_unet
from .tiny_transformers import TEXT_LENGTH, TINY_TRANSFORMERS, count_kwargs, tiny_dit, tiny_flux, tiny_pixart

KINDS = list(TINY_TRANSFORMERS)

# Ops fvcore leaves uncounted that carry no multiply-accumulate work worth counting (rms_norm: a norm
# fvcore does not know; SD3's diffusers RMSNorm is pow/mean/rsqrt, uncounted alike).
POINTWISE = {
    "aten::add", "aten::sub", "aten::rsub", "aten::mul", "aten::div", "aten::exp", "aten::sin", "aten::cos",
    "aten::silu", "aten::gelu", "aten::softmax", "aten::embedding", "aten::neg", "aten::pow", "aten::mean",
    "aten::rsqrt", "aten::reciprocal", "aten::outer", "aten::repeat_interleave", "aten::unflatten", "aten::rms_norm",
}


@pytest.fixture(scope="module", params=KINDS)
def model(request):
    return TINY_TRANSFORMERS[request.param]()


@pytest.fixture(scope="module")
def table(model):
    return MacsTable.for_model(model, **count_kwargs(model))


def test_example_inputs_make_a_batch_one_call_of_every_class(model):
    inputs = example_inputs(model, **count_kwargs(model))
    with torch.no_grad():
        output = model(**inputs, return_dict=False)[0]
    assert output.shape[0] == 1
    if type(model).__name__ == "FluxTransformer2DModel":
        assert inputs["hidden_states"].shape == (1, 16, 4) and inputs["img_ids"].shape == (16, 3)
        assert inputs["timestep"].item() == pytest.approx(0.5)  # 500 plan units, as FluxPipeline passes them
    if "encoder_hidden_states" in inputs:
        assert inputs["encoder_hidden_states"].shape[1] == TEXT_LENGTH


def test_example_inputs_ask_for_what_the_config_lacks():
    with pytest.raises(ConfigError, match=r"pass sample_shape=\(image_tokens, 4\)"):
        example_inputs(tiny_flux(), text_length=3)
    with pytest.raises(ConfigError, match="needs encoder_hidden_states: .* or text_length=L"):
        example_inputs(tiny_pixart())
    with pytest.raises(ConfigError, match="either inputs or"):
        count_macs(tiny_dit(), (4, 8, 8), inputs=example_inputs(tiny_dit()))
    assert example_inputs(tiny_pixart(), encoder_hidden_states=(7, 12))["encoder_hidden_states"].shape == (1, 7, 12)


def test_full_count_covers_every_matmul_like_op(model, table):
    analysis = macs_analysis(model, **count_kwargs(model))
    assert table.full == analysis.total() == count_macs(model, inputs=example_inputs(model, **count_kwargs(model)))
    assert set(analysis.unsupported_ops()) <= POINTWISE
    assert set(table.reuse_savings) == {b.name for b in find_blocks(model)}
    assert set(table.skip_savings) == {b.name for b in find_blocks(model) if b.kind != "branch"}
    assert all(table.reuse_savings[b.name] > 0 for b in find_blocks(model))
    assert analysis.by_operator().get("einsum", 0) == 0  # unpatchify permutes: no products


def test_dit_attention_macs_match_a_hand_count():
    analysis = macs_analysis(tiny_dit())
    by_op = analysis.by_module_and_operator()["transformer.transformer_blocks.0.attn1"]
    tokens, width = (8 // 2) ** 2, 2 * 4
    assert by_op["scaled_dot_product_attention"] == 2 * tokens * tokens * width  # QK^T and attn@V
    assert by_op["linear"] == 4 * tokens * width * width  # to_q, to_k, to_v, to_out


def test_a_blocks_savings_leave_out_calls_of_its_submodules_from_outside():
    # DiT's final layer calls transformer_blocks[0].norm1.emb from the top level; skipping block 0 keeps that call.
    table = MacsTable.for_model(tiny_dit())
    assert table.reuse_savings["blocks.0"] == table.reuse_savings["blocks.1"] == table.reuse_savings["blocks.2"]


def test_containers_list_what_lies_inside_them():
    table = MacsTable.for_model(tiny_flux(), **count_kwargs(tiny_flux()))
    assert table.branch_blocks["single.0"] == ("single.0.attn", "single.0.mlp")
    assert table.branch_blocks["tail.single.0"] == ("single.0", "single.0.attn", "single.0.mlp",
                                                     "single.1", "single.1.attn", "single.1.mlp")
    assert table.reuse_savings["tail.1"] == sum(table.reuse_savings[n] for n in ("blocks.1", "single.0", "single.1"))
    assert table.step_macs(["single.0", "single.0.mlp"], ["tail.single.0"]) == table.step_macs(reuses=["tail.single.0"])
    plan = Plan([900, 500, 100], skips=[["blocks.0.ff"], [], []], reuses=[[], ["tail.1"], ["single.1.attn"]])
    expected = table.step_macs(["blocks.0.ff"]) + table.step_macs(reuses=["tail.1"]) + table.step_macs(
        reuses=["single.1.attn"]
    )
    assert table.plan_macs(plan) == expected < 3 * table.full
    restored = MacsTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert restored == table and restored.sample_shape == (16, 4)


def _random_choices(blocks, rng: random.Random) -> tuple[list[str], list[str]]:
    skippable = [b.name for b in blocks if b.kind != "branch"]
    names = [b.name for b in blocks]
    reused = rng.sample(names, rng.randint(0, 3))
    skipped = rng.sample([n for n in skippable if n not in reused], rng.randint(0, 4))
    return skipped, reused


def test_step_macs_of_random_choices_equal_a_direct_count_with_the_switch_active(model, table):
    blocks = find_blocks(model)
    names = [b.name for b in blocks]
    inputs = example_inputs(model, **count_kwargs(model))
    rng = random.Random(sum(map(ord, type(model).__name__)))
    cases = [_random_choices(blocks, rng) for _ in range(12)]
    cases += [([], [n]) for n in names if n.startswith("tail.")]  # every tail alone
    switch = BlockSwitch(model)
    try:
        for skipped, reused in cases:
            switch.clear()
            switch.set_step(keep=names)
            with torch.no_grad():
                model(**inputs)  # a previous step: every output and residual to reuse
            switch.set_step(skip=skipped, reuse=reused)
            assert count_macs(model, inputs=inputs) == table.step_macs(skipped, reused), (skipped, reused)
    finally:
        switch.remove()


def test_table_refuses_a_transformer_with_blocks_switched_off():
    model = tiny_dit()
    with BlockSwitch(model) as switch:
        switch.set_step(skip=["blocks.1.ff"])
        with pytest.raises(ConfigError, match="skips or reuses transformer_blocks.1.ff; build the MACs table"):
            MacsTable.for_model(model)


def test_any_counter_with_the_interface_builds_the_table():
    class Doubling:
        def count(self, model, inputs):
            count = FvcoreCounter().count(model, inputs)
            return MacsCount(2 * count.total, {k: 2 * v for k, v in count.by_module.items()}, count.by_operator)

    model = tiny_dit()
    plain, doubled = MacsTable.for_model(model), MacsTable.for_model(model, counter=Doubling())
    assert doubled.full == 2 * plain.full
    assert doubled.skip_savings == {name: 2 * value for name, value in plain.skip_savings.items()}
    assert count_macs(model, counter=Doubling()) == 2 * plain.full


def test_a_missing_private_torch_api_is_an_error_not_a_silent_undercount(monkeypatch):
    monkeypatch.delattr(torch._C, "_get_value_trace")
    with pytest.raises(OptunaDiffusionError, match="no torch._C._get_value_trace"):
        count_macs(tiny_dit())


# Cross-check with torch.utils.flop_counter.FlopCounterMode --------------------------------------------------
#
# Compared: fvcore's MACs of the ops "conv", "linear", "addmm", "mm", "matmul", "bmm", "baddbmm", "einsum" and
# "scaled_dot_product_attention", against FlopCounterMode's flops / 2 of aten.convolution, aten.addmm,
# aten.mm, aten.bmm and aten.baddbmm, with SDPA on its math backend (which FlopCounterMode sees as two
# bmm; its fused CPU kernel it does not count). The models must run no op FlopCounterMode counts beyond
# those. fvcore's norm and up-sampling counts are left out: FlopCounterMode has none.

FVCORE_PRODUCTS = {
    "conv", "linear", "addmm", "mm", "matmul", "bmm", "baddbmm", "einsum", "scaled_dot_product_attention",
}
TORCH_PRODUCTS = {"aten.convolution", "aten.addmm", "aten.mm", "aten.bmm", "aten.baddbmm"}

CROSS_CHECKED = {
    "unet": (tiny_unet, {"class_labels": True}),
    "text_unet": (tiny_text_unet, {"encoder_hidden_states": (3, 16)}),
    **{kind: (make, None) for kind, make in TINY_TRANSFORMERS.items()},
}


@pytest.mark.parametrize("name", list(CROSS_CHECKED))
def test_fvcore_products_equal_torch_flop_counter_halved(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    make, kwargs = CROSS_CHECKED[name]
    model = make()
    inputs = example_inputs(model, **(kwargs if kwargs is not None else count_kwargs(model)))
    analysis = macs_analysis(model, inputs=inputs)
    prefix = "unet" if "unet" in name else "transformer"
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(**inputs)
    torch_counts = {
        module: {str(op): flops for op, flops in ops.items()} for module, ops in counter.get_flop_counts().items()
    }
    root = type(model).__name__
    assert set(torch_counts[root]) <= TORCH_PRODUCTS
    fvcore = analysis.by_module_and_operator()
    checked = [""] + [path for block in find_blocks(model) for path in block.members]
    for path in checked:
        fvcore_macs = sum(v for op, v in fvcore.get(f"{prefix}.{path}" if path else prefix, {}).items()
                          if op in FVCORE_PRODUCTS)
        torch_flops = sum(torch_counts.get(f"{root}.{path}" if path else root, {}).values())
        assert 2 * fvcore_macs == torch_flops, path or "whole model"
    assert sum(torch_counts[root].values()) > 0
