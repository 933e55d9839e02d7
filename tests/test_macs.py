import json
import random

import pytest
import torch

from optuna_diffusion.blocks import BlockSwitch, find_blocks
from optuna_diffusion.errors import ConfigError, PlanError
from optuna_diffusion.macs import MacsTable, count_macs, macs_analysis
from optuna_diffusion.plan import Plan

from .helpers import tiny_text_unet, tiny_unet

# Ops fvcore leaves uncounted that carry no multiply-accumulate work worth counting.
POINTWISE = {
    "aten::add", "aten::sub", "aten::mul", "aten::div", "aten::exp", "aten::sin", "aten::cos",
    "aten::silu", "aten::gelu", "aten::softmax", "aten::embedding", "aten::neg", "aten::pow",
}


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


@pytest.fixture(scope="module")
def table(unet):
    return MacsTable.for_model(unet, class_labels=True)


def test_full_count_covers_every_matmul_like_op(unet, table):
    analysis = macs_analysis(unet, class_labels=True)
    assert table.full == count_macs(unet, (1, 8, 8), class_labels=True) == analysis.total() > 0
    assert set(analysis.unsupported_ops()) <= POINTWISE
    assert table.sample_shape == (1, 8, 8)
    assert set(table.reuse_savings) == {b.name for b in find_blocks(unet)}
    assert set(table.skip_savings) == {b.name for b in find_blocks(unet) if b.kind != "branch"}


def test_skip_predictions_equal_a_direct_count_with_the_blocks_skipped(unet, table):
    names = sorted(table.skip_savings)
    rng = random.Random(0)
    switch = BlockSwitch(unet)
    try:
        for size in (1, 2, 4, 7):
            skipped = rng.sample(names, size)
            switch.set_step(skip=skipped)
            assert count_macs(unet, class_labels=True) == table.step_macs(skips=skipped), skipped
    finally:
        switch.remove()
    # A resnet whose channels change still pays for its 1x1 shortcut conv.
    assert table.skip_savings["up.0.resnet.1"] < table.reuse_savings["up.0.resnet.1"]
    assert table.skip_savings["down.0.resnet.0"] == table.reuse_savings["down.0.resnet.0"]


def test_reuse_predictions_equal_a_direct_count_with_the_blocks_reused(unet, table):
    names = list(table.reuse_savings)
    inside_branch = set(table.branch_blocks["up.0"])
    rng = random.Random(1)
    cases = [["up.0"], ["up.0", "up.1.resnet.2", "down.0.resnet.0"], ["mid.attn.0"], ["up.1.resnet.0"]]
    cases += [rng.sample([n for n in names if n != "up.0"], 3) for _ in range(2)]
    cases += [["up.0"] + rng.sample([n for n in names if n not in inside_branch | {"up.0"}], 2)]
    switch = BlockSwitch(unet)
    x, t, label = torch.randn(1, 1, 8, 8), torch.tensor([500]), torch.tensor([0])
    try:
        for reused in cases:
            switch.clear()
            switch.set_step(keep=names)
            with torch.no_grad():
                unet(x, t, class_labels=label)
            switch.set_step(reuse=reused)
            assert count_macs(unet, class_labels=True) == table.step_macs(reuses=reused), reused
    finally:
        switch.remove()


def test_mixed_skip_and_reuse_step_equals_a_direct_count(unet, table):
    switch = BlockSwitch(unet)
    try:
        switch.set_step(keep=["up.0"])
        with torch.no_grad():
            unet(torch.randn(1, 1, 8, 8), torch.tensor([500]), class_labels=torch.tensor([0]))
        switch.set_step(skip=["up.1.resnet.1", "down.0.resnet.1"], reuse=["up.0"])
        assert count_macs(unet, class_labels=True) == table.step_macs(["up.1.resnet.1", "down.0.resnet.1"], ["up.0"])
    finally:
        switch.remove()


def test_attention_macs_match_a_hand_count(unet):
    analysis = macs_analysis(unet, class_labels=True)
    by_op = analysis.by_module_and_operator()["unet.mid_block.attentions.0"]
    positions, channels = 4 * 4, 32
    assert by_op["scaled_dot_product_attention"] == 2 * positions * positions * channels  # QK^T and attn@V
    projections = 4 * positions * channels * channels  # to_q, to_k, to_v, to_out (biases are free)
    assert by_op["linear"] == projections


def test_attention_processor_does_not_change_the_count(unet):
    from diffusers.models.attention_processor import AttnProcessor

    classic = tiny_unet()
    for module in classic.modules():
        if hasattr(module, "set_processor"):
            module.set_processor(AttnProcessor())  # baddbmm + softmax + bmm instead of SDPA
    analysis = macs_analysis(classic, class_labels=True)
    assert "aten::baddbmm" not in analysis.unsupported_ops()
    assert analysis.total() == count_macs(unet, class_labels=True)


def test_full_network_plan_costs_k_evaluations_and_guidance_doubles_it(table):
    plan = Plan([900, 600, 300, 50])
    assert table.plan_macs(plan) == 4 * table.full
    assert table.plan_macs(plan, guidance=True) == 8 * table.full
    partial = Plan([900, 600, 300], skips=[["mid.attn.0"], [], ["up.1.resnet.0"]], reuses=[[], ["up.0"], []])
    expected = table.step_macs(["mid.attn.0"]) + table.step_macs(reuses=["up.0"]) + table.step_macs(["up.1.resnet.0"])
    assert table.plan_macs(partial) == expected < 3 * table.full
    assert table.plan_macs(partial, guidance=True) == 2 * expected


def test_blocks_inside_a_reused_branch_are_not_subtracted_twice(table):
    branch_only = table.step_macs(reuses=["up.0"])
    assert branch_only == table.full - table.reuse_savings["up.0"]
    assert table.step_macs(skips=["mid.attn.0", "up.0.resnet.1"], reuses=["up.0"]) == branch_only
    assert table.step_macs(reuses=["up.0", "mid.attn.0"]) == branch_only
    outside = table.skip_savings["up.1.resnet.0"]
    assert table.step_macs(skips=["up.1.resnet.0"], reuses=["up.0"]) == branch_only - outside


def test_bad_block_choices_are_plan_errors(table):
    with pytest.raises(PlanError, match="unknown block 'nope'"):
        table.step_macs(["nope"])
    with pytest.raises(PlanError, match="can only be reused"):
        table.step_macs(["up.0"])
    with pytest.raises(PlanError, match="both skipped and reused"):
        table.step_macs(["mid.attn.0"], ["mid.attn.0"])
    with pytest.raises(PlanError, match="unknown block"):
        table.plan_macs(Plan([9, 3], skips=[[], ["down.9.attn.0"]]))


def test_table_round_trips_through_json(table):
    restored = MacsTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert restored == table
    plan = Plan([9, 3], reuses=[[], ["up.0"]])
    assert restored.plan_macs(plan) == table.plan_macs(plan)
    with pytest.raises(ConfigError, match="not a MACs table"):
        MacsTable.from_dict({"full": 1})
    bad = dict(table.to_dict(), skip_savings={"mid.attn.0": -1})
    with pytest.raises(ConfigError, match="non-negative integer"):
        MacsTable.from_dict(bad)


def test_table_refuses_a_model_with_blocks_switched_off():
    unet = tiny_unet()
    with BlockSwitch(unet) as switch:
        switch.set_step(skip=["mid.attn.0"])
        with pytest.raises(ConfigError, match="full network"):
            MacsTable.for_model(unet)
        switch.set_step()
        assert MacsTable.for_model(unet).full == count_macs(tiny_unet())


def test_conditional_unet_counts_cross_attention():
    unet = tiny_text_unet()
    with pytest.raises(ConfigError, match="needs encoder_hidden_states"):
        count_macs(unet)
    tokens, context_dim = 3, 16
    analysis = macs_analysis(unet, encoder_hidden_states=(tokens, context_dim))
    assert set(analysis.unsupported_ops()) <= POINTWISE
    by_op = analysis.by_module_and_operator()["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2"]
    positions, channels = 8 * 8, 32
    assert by_op["scaled_dot_product_attention"] == 2 * positions * tokens * channels > 0
    table = MacsTable.for_model(unet, encoder_hidden_states=torch.zeros(1, tokens, context_dim))
    assert table.full == analysis.total()
    assert table.skip_savings["down.0.attn.0"] > by_op["scaled_dot_product_attention"]
    # More tokens cost more cross-attention MACs.
    assert count_macs(unet, encoder_hidden_states=(2 * tokens, context_dim)) > table.full
