import random

import pytest
import torch

from optuna_diffusion.blocks import BlockSwitch, check_plan_blocks, find_blocks
from optuna_diffusion.errors import PlanError
from optuna_diffusion.plan import Plan

from .helpers import tiny_text_unet, tiny_unet


def _call(unet, x, t, labels):
    with torch.inference_mode():
        return unet(x, torch.tensor(t), class_labels=labels).sample


def test_block_names_are_stable_and_cover_resnets_attentions_and_branches():
    names = [b.name for b in find_blocks(tiny_unet())]
    assert names == [
        "down.0.resnet.0", "down.0.resnet.1",
        "down.1.resnet.0", "down.1.resnet.1", "down.1.attn.0", "down.1.attn.1",
        "mid.resnet.0", "mid.resnet.1", "mid.attn.0",
        "up.0.resnet.0", "up.0.resnet.1", "up.0.resnet.2", "up.0.attn.0", "up.0.attn.1", "up.0.attn.2",
        "up.1.resnet.0", "up.1.resnet.1", "up.1.resnet.2",
        "up.0",
    ]
    branch = find_blocks(tiny_unet())[-1]
    assert branch.members == ("down_blocks.0.downsamplers.0", "down_blocks.1", "mid_block", "up_blocks.0")


def test_skipping_nothing_is_bit_identical():
    unet = tiny_unet()
    x, labels = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    before = _call(unet, x, 500, labels)
    switch = BlockSwitch(unet).follow(Plan([500, 100]))
    assert torch.equal(_call(unet, x, 500, labels), before)
    switch.remove()
    assert "forward" not in vars(unet.mid_block.attentions[0])
    assert torch.equal(_call(unet, x, 500, labels), before)


def test_skipped_attention_returns_its_input_and_skipped_resnet_its_shortcut():
    unet = tiny_unet()
    x, labels = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    seen = {}
    attn = unet.up_blocks[0].attentions[1]
    resnet = unet.up_blocks[0].resnets[1]  # channels change: the 1x1 shortcut conv stands in
    attn.register_forward_hook(lambda m, args, out: seen.update(attn=(args[0], out)))
    resnet.register_forward_hook(lambda m, args, out: seen.update(resnet=(args[0], out)))
    switch = BlockSwitch(unet)
    switch.set_step(skip=["up.0.attn.1", "up.0.resnet.1"])
    out = _call(unet, x, 500, labels)
    switch.remove()

    assert torch.isfinite(out).all()
    attn_in, attn_out = seen["attn"]
    assert torch.equal(attn_out, attn_in)  # a skipped attention block returns its input
    resnet_in, resnet_out = seen["resnet"]
    assert resnet.conv_shortcut is not None and resnet_out.shape[1] != resnet_in.shape[1]
    with torch.no_grad():
        shortcut = resnet.conv_shortcut(resnet_in) / resnet.output_scale_factor
    assert torch.equal(resnet_out, shortcut)  # a skipped residual block returns its 1x1 shortcut conv


def test_skip_changes_output_and_reuse_returns_previous_output():
    unet = tiny_unet()
    x, labels = torch.randn(2, 1, 8, 8), torch.tensor([3, 4])
    captured = {}
    unet.mid_block.attentions[0].register_forward_hook(lambda m, a, out: captured.setdefault("mid", out.clone()))
    plan = Plan([800, 400], reuses=[[], ["mid.attn.0"]])
    with BlockSwitch(unet).follow(plan):
        _call(unet, x, 800, labels)
        reused = _call(unet, x * 0.5, 400, labels)
    # Reference: replace the mid attention output at t=400 by its t=800 output with a plain forward hook.
    handle = unet.mid_block.attentions[0].register_forward_hook(lambda m, a, out: captured["mid"])
    expected = _call(unet, x * 0.5, 400, labels)
    handle.remove()
    torch.testing.assert_close(reused, expected, atol=0, rtol=0)


def test_branch_reuse_does_not_run_the_deep_branch_and_matches_a_manual_cache():
    unet = tiny_unet()
    x, labels = torch.randn(2, 1, 8, 8), torch.tensor([3, 4])
    calls = []
    # Pre-hooks on inner modules fire only when their block really computes.
    inner = ["down_blocks.0.resnets.0", "down_blocks.1.resnets.0", "mid_block.resnets.0", "up_blocks.0.resnets.0", "up_blocks.1.resnets.0"]
    for path in inner:
        unet.get_submodule(path).register_forward_pre_hook(lambda m, a, p=path: calls.append(p))
    plan = Plan([800, 400], reuses=[[], ["up.0"]])
    up0_out = {}
    unet.up_blocks[0].register_forward_hook(lambda m, a, out: up0_out.setdefault("t800", out.clone()))
    with BlockSwitch(unet).follow(plan):
        _call(unet, x, 800, labels)
        calls.clear()
        reused = _call(unet, x * 0.5, 400, labels)
    assert calls == ["down_blocks.0.resnets.0", "up_blocks.1.resnets.0"]
    handle = unet.up_blocks[0].register_forward_hook(lambda m, a, out: up0_out["t800"])
    expected = _call(unet, x * 0.5, 400, labels)
    handle.remove()
    torch.testing.assert_close(reused, expected, atol=0, rtol=0)


def test_plan_block_checks_are_one_line_errors():
    blocks = find_blocks(tiny_unet())
    with pytest.raises(PlanError, match="unknown block 'nope'"):
        check_plan_blocks(Plan([9, 3], skips=[["nope"], []]), blocks)
    with pytest.raises(PlanError, match="can only be reused"):
        check_plan_blocks(Plan([9, 3], skips=[[], ["up.0"]]), blocks)
    with pytest.raises(PlanError, match="inside branch 'up.0'"):
        check_plan_blocks(Plan([9, 3], skips=[[], ["mid.attn.0"]], reuses=[[], ["up.0"]]), blocks)
    check_plan_blocks(Plan([9, 3], skips=[[], ["up.1.resnet.0"]], reuses=[[], ["up.0"]]), blocks)


def test_unet_called_off_plan_is_a_clear_error():
    unet = tiny_unet()
    with BlockSwitch(unet).follow(Plan([800, 400], skips=[["mid.attn.0"], []])):
        with pytest.raises(PlanError, match="t=123, which is not a time step of the plan"):
            _call(unet, torch.randn(1, 1, 8, 8), 123, torch.tensor([0]))


def test_random_skip_sets_run_on_a_conditional_transformer_unet():
    unet = tiny_text_unet()
    blocks = find_blocks(unet)
    names = [b.name for b in blocks if b.kind != "branch"]
    assert "down.0.attn.0" in names and "mid.attn.0" in names
    x, context = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 16)
    with torch.inference_mode():
        full = unet(x, 10, encoder_hidden_states=context).sample
    rng = random.Random(0)
    switch = BlockSwitch(unet)
    for _ in range(3):
        switch.set_step(skip=rng.sample(names, 3))
        with torch.inference_mode():
            out = unet(x, 10, encoder_hidden_states=context).sample
        assert out.shape == full.shape and torch.isfinite(out).all()
    switch.remove()
    with torch.inference_mode():
        assert torch.equal(unet(x, 10, encoder_hidden_states=context).sample, full)


def test_apply_follows_the_plan_on_a_pipeline_and_replaces_a_previous_plan():
    from types import SimpleNamespace

    from optuna_diffusion import apply

    unet = tiny_unet()
    pipeline = SimpleNamespace(unet=unet)
    x, labels = torch.randn(1, 1, 8, 8), torch.tensor([0])
    full = _call(unet, x, 700, labels)
    apply(pipeline, Plan([700, 300], skips=[["mid.attn.0"], []]))
    skipped = _call(unet, x, 700, labels)
    assert not torch.equal(skipped, full)
    switch = apply(unet, Plan([700, 300]))
    assert torch.equal(_call(unet, x, 700, labels), full)
    switch.remove()
    assert "forward" not in vars(unet.mid_block.attentions[0])


def test_a_users_diffusers_hooks_before_and_after_the_switch_survive_its_removal():
    from diffusers.hooks import HookRegistry, ModelHook

    class Counting(ModelHook):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def post_forward(self, module, output):
            self.calls += 1
            return output

    unet = tiny_unet()
    x, labels = torch.randn(1, 1, 8, 8), torch.tensor([0])
    full = _call(unet, x, 500, labels)
    attention = unet.mid_block.attentions[0]
    registry = HookRegistry.check_if_exists_or_initialize(attention)
    before, after = Counting(), Counting()
    registry.register_hook(before, "user_before")
    switch = BlockSwitch(unet)
    registry.register_hook(after, "user_after")
    switch.set_step(skip=["mid.attn.0"])
    skipped = _call(unet, x, 500, labels)
    assert (before.calls, after.calls) == (0, 1)  # the block did not run; the outer hook saw the call
    switch.remove()
    assert not torch.equal(skipped, full)
    assert torch.equal(_call(unet, x, 500, labels), full)
    assert (before.calls, after.calls) == (1, 2)
    registry.remove_hook("user_after")
    registry.remove_hook("user_before")
    assert torch.equal(_call(unet, x, 500, labels), full)
