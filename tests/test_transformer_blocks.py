"""The block switch on diffusers transformers (DiT, PixArt, SD3, Flux), checked against hand-written references."""

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers.hooks import HookRegistry, ModelHook

from optuna_diffusion import apply
from optuna_diffusion.blocks import BlockSwitch, check_plan_blocks, find_blocks, installed_switch, lies_inside
from optuna_diffusion.errors import PlanError
from optuna_diffusion.plan import Plan

from .tiny_transformers import TINY_TRANSFORMERS, call_kwargs, run, tiny_dit, tiny_flux, tiny_sd3

KINDS = list(TINY_TRANSFORMERS)


@pytest.fixture(scope="module", params=KINDS)
def model(request):
    return TINY_TRANSFORMERS[request.param]()


# Hand-written stream handling, independent of the library's --------------------------------------------


def _joint(model) -> bool:
    return type(model).__name__ in ("SD3Transformer2DModel", "FluxTransformer2DModel")


def _block_inputs(model, args, kwargs) -> dict:
    if _joint(model):  # SD3 and Flux call their blocks by keyword
        return {"h": kwargs["hidden_states"], "e": kwargs["encoder_hidden_states"]}
    return {"h": args[0]}  # DiT and PixArt pass hidden_states first


def _block_output(model, block, streams: dict):
    if not _joint(model):
        return streams["h"]
    text = None if getattr(block, "context_pre_only", False) else streams["e"]
    return (text, streams["h"])


def _output_streams(model, output) -> dict:
    if not _joint(model):
        return {"h": output}
    return {"h": output[1]} if output[0] is None else {"h": output[1], "e": output[0]}


def _all_blocks(model) -> list:
    return list(model.transformer_blocks) + list(getattr(model, "single_transformer_blocks", None) or [])


def _zeros_like(output):
    return tuple(torch.zeros_like(o) for o in output) if isinstance(output, tuple) else torch.zeros_like(output)


# Names -------------------------------------------------------------------------------------------------


def test_block_names_are_stable_per_architecture():
    names = {kind: [b.name for b in find_blocks(make())] for kind, make in TINY_TRANSFORMERS.items()}
    assert names["dit"] == [
        "blocks.0", "blocks.0.attn", "blocks.0.ff", "blocks.1", "blocks.1.attn", "blocks.1.ff",
        "blocks.2", "blocks.2.attn", "blocks.2.ff", "tail.0", "tail.1",
    ]
    assert names["pixart"] == [
        "blocks.0", "blocks.0.attn", "blocks.0.cross_attn", "blocks.0.ff",
        "blocks.1", "blocks.1.attn", "blocks.1.cross_attn", "blocks.1.ff",
        "blocks.2", "blocks.2.attn", "blocks.2.cross_attn", "blocks.2.ff", "tail.0", "tail.1",
    ]
    assert names["sd3"] == [  # block 0 has SD3.5's second attention; the last block has no text feed-forward
        "blocks.0", "blocks.0.attn", "blocks.0.attn2", "blocks.0.ff", "blocks.0.ff_context",
        "blocks.1", "blocks.1.attn", "blocks.1.ff", "blocks.1.ff_context",
        "blocks.2", "blocks.2.attn", "blocks.2.ff", "tail.0", "tail.1",
    ]
    assert names["flux"] == [
        "blocks.0", "blocks.0.attn", "blocks.0.ff", "blocks.0.ff_context",
        "blocks.1", "blocks.1.attn", "blocks.1.ff", "blocks.1.ff_context",
        "single.0", "single.0.attn", "single.0.mlp", "single.1", "single.1.attn", "single.1.mlp",
        "tail.0", "tail.1", "tail.single.0",
    ]
    by_name = {b.name: b for b in find_blocks(tiny_flux())}
    assert by_name["tail.1"].members == (
        "transformer_blocks.1", "single_transformer_blocks.0", "single_transformer_blocks.1"
    )
    assert by_name["tail.1"].actions == {"reuse"} and by_name["blocks.1.ff"].actions == {"skip", "reuse"}
    assert by_name["single.0.mlp"].members == ("single_transformer_blocks.0.proj_mlp",)
    assert [b.kind for b in find_blocks(tiny_dit())][:3] == ["transformer", "attention", "feedforward"]


def test_unsupported_models_are_one_line_errors():
    with pytest.raises(PlanError, match="neither a diffusers UNet .* nor a supported transformer"):
        find_blocks(torch.nn.Linear(2, 2))


def test_tails_contain_later_blocks_for_the_plan_check_and_the_sampler():
    blocks = find_blocks(tiny_flux())
    by_name = {b.name: b for b in blocks}
    inside = {b.name for b in blocks if b.name != "tail.1" and lies_inside(b, by_name["tail.1"])}
    assert inside == {
        "blocks.1", "blocks.1.attn", "blocks.1.ff", "blocks.1.ff_context", "single.0", "single.0.attn",
        "single.0.mlp", "single.1", "single.1.attn", "single.1.mlp", "tail.single.0",
    }
    with pytest.raises(PlanError, match="'single.0.attn' lies inside branch 'tail.1'"):
        check_plan_blocks(Plan([9, 3], skips=[[], ["single.0.attn"]], reuses=[[], ["tail.1"]]), blocks)
    with pytest.raises(PlanError, match="can only be reused"):
        check_plan_blocks(Plan([9, 3], skips=[["tail.0"], []]), blocks)
    # A sub-layer choice under its whole block's is moot but allowed (the sampler may produce it).
    check_plan_blocks(Plan([9, 3], skips=[["blocks.0", "blocks.0.ff"], []], reuses=[[], ["blocks.0"]]), blocks)


# Skip nothing ------------------------------------------------------------------------------------------


def test_skipping_nothing_is_bit_identical_and_remove_leaves_no_trace(model):
    kwargs = call_kwargs(model, 800)
    before = run(model, kwargs)
    blocks = find_blocks(model)
    singles = [b.name for b in blocks if b.kind != "branch"]
    switch = BlockSwitch(model)
    assert torch.equal(run(model, kwargs), before)  # installed, nothing chosen
    switch.follow(Plan([800, 400]))
    assert torch.equal(run(model, kwargs), before)  # a plan that skips nothing
    # Keeping outputs for a later reuse does not change this step's output.
    switch.follow(Plan([800, 400, 200], reuses=[[], singles, ["tail.0"]]))
    assert torch.equal(run(model, kwargs), before)
    switch.remove()
    assert torch.equal(run(model, kwargs), before)
    for module in model.modules():
        assert "forward" not in vars(module)
        assert not any(isinstance(value, HookRegistry) for value in vars(module).values())
    assert installed_switch(model) is None


# Skip ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_skipped_block_returns_its_input_streams(kind):
    model = TINY_TRANSFORMERS[kind]()
    kwargs = call_kwargs(model, 600)
    for k, block in enumerate(_all_blocks(model)):
        name = f"blocks.{k}" if k < len(model.transformer_blocks) else f"single.{k - len(model.transformer_blocks)}"
        handle = block.register_forward_hook(
            lambda m, args, kw, out: _block_output(model, m, _block_inputs(model, args, kw)), with_kwargs=True
        )
        expected = run(model, kwargs)
        handle.remove()
        with BlockSwitch(model) as switch:
            switch.set_step(skip=[name])
            assert torch.equal(run(model, kwargs), expected), name


@pytest.mark.parametrize("kind", KINDS)
def test_a_skipped_sub_layer_contributes_nothing(kind):
    model = TINY_TRANSFORMERS[kind]()
    kwargs = call_kwargs(model, 600)
    full = run(model, kwargs)
    for block in find_blocks(model):
        if block.kind not in ("attention", "feedforward"):
            continue
        module = model.get_submodule(block.members[0])
        # Reference: the real sub-layer runs and its output is replaced by zeros of the same structure.
        handle = module.register_forward_hook(lambda m, args, out: _zeros_like(out))
        expected = run(model, kwargs)
        handle.remove()
        with BlockSwitch(model) as switch:
            switch.set_step(skip=[block.name])
            skipped = run(model, kwargs)
        assert torch.equal(skipped, expected), block.name
        assert not torch.equal(skipped, full), block.name


# Reuse --------------------------------------------------------------------------------------------------


def _capture(module, store: dict, key: str, model):
    def hook(m, args, kwargs, output):
        store[key] = (_block_inputs(model, args, kwargs), _output_streams(model, output))

    return module.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("kind", KINDS)
def test_a_reused_block_adds_its_last_residual_to_this_steps_input(kind):
    model = TINY_TRANSFORMERS[kind]()
    k = 1
    block = model.transformer_blocks[k]
    a, b = call_kwargs(model, 800, seed=1), call_kwargs(model, 400, seed=2)
    seen: dict = {}
    handle = _capture(block, seen, "A", model)
    run(model, a)  # step A with the full network: the block's input and output
    handle.remove()
    (input_a, output_a) = seen["A"]
    residual = {s: output_a[s] - input_a[s] for s in output_a}

    def reference(m, args, kwargs, output):
        streams = _block_inputs(model, args, kwargs)
        return _block_output(model, m, {s: v + residual[s] if s in residual else v for s, v in streams.items()})

    handle = block.register_forward_hook(reference, with_kwargs=True)
    expected = run(model, b)
    handle.remove()
    with BlockSwitch(model).follow(Plan([800, 400], reuses=[[], [f"blocks.{k}"]])):
        run(model, a)
        reused = run(model, b)
    assert torch.equal(reused, expected)
    assert not torch.equal(reused, run(model, b))


@pytest.mark.parametrize("kind", KINDS)
def test_a_reused_sub_layer_returns_its_last_output(kind):
    model = TINY_TRANSFORMERS[kind]()
    module = model.transformer_blocks[0].ff
    a, b = call_kwargs(model, 800, seed=1), call_kwargs(model, 400, seed=2)
    seen = {}
    handle = module.register_forward_hook(lambda m, args, out: seen.setdefault("A", out))
    run(model, a)
    handle.remove()
    handle = module.register_forward_hook(lambda m, args, out: seen["A"])
    expected = run(model, b)
    handle.remove()
    with BlockSwitch(model).follow(Plan([800, 400], reuses=[[], ["blocks.0.ff"]])):
        run(model, a)
        assert torch.equal(run(model, b), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_a_reused_tail_adds_its_combined_residual_and_runs_nothing_of_it(kind):
    model = TINY_TRANSFORMERS[kind]()
    blocks = _all_blocks(model)
    k = 1
    a, b = call_kwargs(model, 800, seed=1), call_kwargs(model, 400, seed=2)
    seen: dict = {}
    handles = [_capture(blocks[k], seen, "first", model), _capture(blocks[-1], seen, "last", model)]
    run(model, a)
    for handle in handles:
        handle.remove()
    input_a, final_a = seen["first"][0], seen["last"][1]
    residual = {s: final_a[s] - input_a[s] for s in final_a}

    def first(m, args, kwargs, output):
        streams = _block_inputs(model, args, kwargs)
        return _block_output(model, m, {s: v + residual[s] if s in residual else v for s, v in streams.items()})

    def passed(m, args, kwargs, output):
        return _block_output(model, m, _block_inputs(model, args, kwargs))

    handles = [blocks[k].register_forward_hook(first, with_kwargs=True)]
    handles += [blk.register_forward_hook(passed, with_kwargs=True) for blk in blocks[k + 1 :]]
    expected = run(model, b)
    for handle in handles:
        handle.remove()

    calls = []
    probes = [blk.register_forward_pre_hook(lambda m, args, i=i: calls.append(i)) for i, blk in enumerate(blocks)]
    linears = [m for blk in blocks[k:] for m in blk.modules() if isinstance(m, torch.nn.Linear)]
    probes += [linear.register_forward_pre_hook(lambda m, args: calls.append("linear")) for linear in linears]
    with BlockSwitch(model).follow(Plan([800, 400], reuses=[[], [f"tail.{k}"]])):
        run(model, a)
        calls.clear()
        reused = run(model, b)
    for probe in probes:
        probe.remove()
    assert torch.equal(reused, expected)
    assert "linear" not in calls  # the tail's blocks were entered (and passed over) but computed nothing
    assert calls == list(range(len(blocks)))


def test_a_tail_reused_after_a_step_it_did_not_run_uses_its_last_run():
    model = tiny_dit()
    steps = [call_kwargs(model, t, seed=t) for t in (900, 600, 300)]
    plan = Plan([900, 600, 300], reuses=[[], ["tail.0"], ["tail.1"]])
    with BlockSwitch(model).follow(plan):
        outputs = [run(model, kwargs) for kwargs in steps]
    # tail.1 did not run at t=600 (inside tail.0), so t=300 adds its residual of t=900.
    seen: dict = {}
    handles = [_capture(model.transformer_blocks[1], seen, "first", model),
               _capture(model.transformer_blocks[2], seen, "last", model)]
    run(model, steps[0])
    for handle in handles:
        handle.remove()
    residual = seen["last"][1]["h"] - seen["first"][0]["h"]
    handles = [model.transformer_blocks[1].register_forward_hook(lambda m, args, out: args[0] + residual),
               model.transformer_blocks[2].register_forward_hook(lambda m, args, out: args[0])]
    expected = run(model, steps[2])
    for handle in handles:
        handle.remove()
    assert torch.equal(outputs[2], expected)


def test_reuse_after_a_skip_takes_the_last_run_or_adds_nothing_if_there_was_none():
    model = tiny_dit()
    steps = {t: call_kwargs(model, t, seed=t) for t in (900, 600, 300)}

    def outputs(plan):
        with BlockSwitch(model).follow(plan):
            return [run(model, steps[t]) for t in plan.timesteps]

    def with_choice(t, **choice):
        with BlockSwitch(model) as switch:
            switch.set_step(**choice)
            return run(model, steps[t])

    # Never ran before (skipped, alone or with its block): reusing adds nothing, like skipping again.
    got = outputs(Plan([900, 600], skips=[["blocks.1", "blocks.0"], []], reuses=[[], ["blocks.1", "blocks.0.attn"]]))
    assert torch.equal(got[1], with_choice(600, skip=["blocks.1", "blocks.0.attn"]))
    # Ran at t=900, skipped at t=600: reusing at t=300 adds the residual of t=900.
    seen: dict = {}
    handle = _capture(model.transformer_blocks[1], seen, "A", model)
    run(model, steps[900])
    handle.remove()
    residual = seen["A"][1]["h"] - seen["A"][0]["h"]
    handle = model.transformer_blocks[1].register_forward_hook(lambda m, args, out: args[0] + residual)
    expected = run(model, steps[300])
    handle.remove()
    got = outputs(Plan([900, 600, 300], skips=[[], ["blocks.1"], []], reuses=[[], [], ["blocks.1"]]))
    assert torch.equal(got[2], expected)


def test_reuse_without_a_previous_output_is_a_plan_error():
    model = tiny_sd3()
    kwargs = call_kwargs(model, 500)
    with BlockSwitch(model) as switch:
        for name in ("blocks.1", "blocks.0.attn2", "tail.0"):
            switch.set_step(reuse=[name])
            with pytest.raises(PlanError, match=f"{name}' is reused at a step that has no previous output"):
                run(model, kwargs)
        switch.set_step(keep=["blocks.1", "tail.0"])
        run(model, kwargs)
        switch.set_step(reuse=["tail.0"])
        run(model, kwargs)
        # diffusers' public reset of stateful hooks clears the switch's caches too.
        HookRegistry.check_if_exists_or_initialize(model).reset_stateful_hooks()
        with pytest.raises(PlanError, match="no previous output"):
            run(model, kwargs)


# Time steps ---------------------------------------------------------------------------------------------


def test_flux_calls_are_matched_in_plan_units_also_in_bfloat16():
    model = tiny_flux()
    plan = Plan([999, 500], skips=[["blocks.0"], ["single.1"]])
    kwargs = call_kwargs(model, 999)
    with BlockSwitch(model).follow(plan) as switch:
        run(model, kwargs)
        assert switch.active_paths() == ["transformer_blocks.0"]
        kwargs["timestep"] = torch.tensor([0.999, 0.999], dtype=torch.bfloat16)  # 0.99609375: t = 996 in bf16
        run(model, kwargs)
        assert switch.active_paths() == ["transformer_blocks.0"]
        kwargs["timestep"] = torch.full((2,), 0.5)
        run(model, kwargs)
        assert switch.active_paths() == ["single_transformer_blocks.1"]
        kwargs["timestep"] = torch.full((2,), 0.7)
        with pytest.raises(PlanError, match=r"called at t=700, which is not a time step of the plan"):
            run(model, kwargs)
        switch.follow(Plan([999, 995], skips=[["blocks.0"], []]))
        kwargs["timestep"] = torch.tensor([0.997, 0.997], dtype=torch.bfloat16)
        with pytest.raises(PlanError, match=r"within the precision of its timestep of plan steps \[999, 995\]"):
            run(model, kwargs)


def test_a_custom_timestep_reader_maps_calls_to_plan_steps():
    model = tiny_dit()
    plan = Plan([40, 20], skips=[["blocks.0"], []])
    switch = BlockSwitch(model, timestep_of=lambda args, kwargs: kwargs["timestep"][0] / 10)
    with switch.follow(plan):
        run(model, call_kwargs(model, 400))
        assert switch.active_paths() == ["transformer_blocks.0"]
        run(model, call_kwargs(model, 200))
        assert switch.active_paths() == []


# Other diffusers hooks ----------------------------------------------------------------------------------


class CountingHook(ModelHook):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def post_forward(self, module, output):
        self.calls += 1
        return output


def test_a_users_diffusers_hooks_before_and_after_the_switch_keep_working():
    model = tiny_flux()
    kwargs = call_kwargs(model, 500)
    full = run(model, kwargs)
    block = model.single_transformer_blocks[0]
    registry = HookRegistry.check_if_exists_or_initialize(block)
    before, after = CountingHook(), CountingHook()
    registry.register_hook(before, "user_before")
    switch = BlockSwitch(model)
    registry.register_hook(after, "user_after")
    switch.set_step(skip=["single.0"])
    skipped = run(model, kwargs)
    assert (before.calls, after.calls) == (0, 1)  # the block did not run; the outer hook saw the call
    switch.remove()
    assert registry.get_hook("user_before") is before and registry.get_hook("user_after") is after
    assert torch.equal(run(model, kwargs), full) and not torch.equal(skipped, full)
    assert (before.calls, after.calls) == (1, 2)


class ScalingHook(ModelHook):
    """A hook that replaces the forward (diffusers' new_forward) and calls the rest of the chain."""

    def new_forward(self, module, *args, **kwargs):
        return self.fn_ref.original_forward(*args, **kwargs) * 2.0


def test_a_replacing_hook_registered_after_the_switch_still_reaches_the_block_once_the_switch_is_gone():
    model = tiny_dit()
    kwargs = call_kwargs(model, 500)
    registry = HookRegistry.check_if_exists_or_initialize(model.transformer_blocks[1])
    registry.register_hook(ScalingHook(), "user")
    scaled = run(model, kwargs)
    registry.remove_hook("user")
    switch = BlockSwitch(model)
    registry.register_hook(ScalingHook(), "user")  # captures the switch's forward as its original
    assert torch.equal(run(model, kwargs), scaled)
    switch.set_step(skip=["blocks.1"])
    assert not torch.equal(run(model, kwargs), scaled)
    switch.remove()
    assert torch.equal(run(model, kwargs), scaled)


def test_the_switch_works_alongside_diffusers_first_block_cache_and_leaves_it_installed():
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    model = tiny_flux()
    apply_first_block_cache(model, FirstBlockCacheConfig(threshold=-1.0))  # always computes: outputs comparable
    kwargs = call_kwargs(model, 500)
    with model.cache_context("cond"):
        full = run(model, kwargs)
    with BlockSwitch(model) as switch:
        switch.set_step(skip=["single.1.attn"])
        with model.cache_context("cond"):
            assert not torch.equal(run(model, kwargs), full)
    assert HookRegistry.check_if_exists_or_initialize(model.transformer_blocks[0]).get_hook("fbc_leader_block_hook")
    with model.cache_context("cond"):
        assert torch.equal(run(model, kwargs), full)


def test_the_switch_keeps_working_when_a_cache_registered_before_it_is_disabled():
    from diffusers.hooks import FirstBlockCacheConfig

    kwargs = call_kwargs(tiny_flux(), 500)
    reference = tiny_flux()
    with BlockSwitch(reference) as switch:
        switch.set_step(skip=["blocks.1"])
        expected = run(reference, kwargs)
    model = tiny_flux()
    model.enable_cache(FirstBlockCacheConfig(threshold=-1.0))
    switch = BlockSwitch(model)
    model.disable_cache()  # diffusers' remove_hook would drop the switch's hooks from the chain
    switch.set_step(skip=["blocks.1"])
    assert torch.equal(run(model, kwargs), expected)
    switch.remove()
    assert torch.equal(run(model, kwargs), run(reference, kwargs))


# apply and the sampler ----------------------------------------------------------------------------------


def test_apply_finds_a_pipelines_transformer_and_replaces_a_previous_plan():
    model = tiny_dit()
    pipeline = SimpleNamespace(unet=None, transformer=model)
    kwargs = call_kwargs(model, 700)
    full = run(model, kwargs)
    first = apply(pipeline, Plan([700, 300], skips=[["blocks.1"], []]))
    assert installed_switch(model) is first
    assert not torch.equal(run(model, kwargs), full)
    second = apply(model, Plan([700, 300]))
    assert installed_switch(model) is second
    assert torch.equal(run(model, kwargs), full)
    second.remove()
    with pytest.raises(PlanError, match="neither a unet nor a transformer"):
        apply(SimpleNamespace(unet=None, transformer=None), Plan([700]))


def test_apply_runs_a_plan_through_diffusers_dit_pipeline():
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), sample_size=8,
    ).eval()
    pipeline = DiTPipeline(transformer=tiny_dit(), vae=vae, scheduler=DDIMScheduler())
    pipeline.set_progress_bar_config(disable=True)

    def sample():
        generator = torch.Generator().manual_seed(0)
        return pipeline(class_labels=[1], guidance_scale=1.0, num_inference_steps=4, generator=generator,
                        output_type="np").images

    full = sample()
    assert pipeline.scheduler.timesteps.tolist() == [750, 500, 250, 0]
    apply(pipeline, Plan([750, 500, 250, 0]))
    assert np.array_equal(sample(), full)
    plan = Plan([750, 500, 250, 0], skips=[[], ["blocks.1.attn"], [], []], reuses=[[], [], ["tail.1"], ["blocks.0"]])
    switch = apply(pipeline, plan)
    planned = sample()
    assert np.isfinite(planned).all() and not np.array_equal(planned, full)
    switch.remove()
    assert np.array_equal(sample(), full)


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_architecture_sampler_plans_run_on_transformer_blocks(kind):
    from optuna_diffusion.samplers import ArchitectureSpace, TimestepSpace
    from optuna_diffusion.samplers._architecture_crossover import crossover_plans
    from optuna_diffusion.samplers._architecture_mutation import mutate_plan

    model = TINY_TRANSFORMERS[kind]()
    space = ArchitectureSpace(blocks=find_blocks(model), timestep_space=TimestepSpace(1000, 3, 3))
    rng = np.random.default_rng(0)
    plans = [space.random(rng, max_ratio=0.6) for _ in range(4)]
    plans += [mutate_plan(space, plans[0], rng, toggle_prob=0.3, max_ratio=0.6), crossover_plans(space, plans[1], plans[2], rng)]
    assert any(name.startswith("tail.") for plan in plans for reused in plan.reuses for name in reused)
    switch = BlockSwitch(model)
    try:
        for plan in plans:
            switch.follow(plan)
            for t in plan.timesteps:
                assert torch.isfinite(run(model, call_kwargs(model, t))).all()
    finally:
        switch.remove()


def test_random_plans_run_and_full_steps_stay_exact():
    model = tiny_sd3()
    names = [b.name for b in find_blocks(model) if b.kind != "branch"]
    rng = random.Random(0)
    kwargs = [call_kwargs(model, t, seed=t) for t in (900, 500, 100)]
    full = [run(model, k) for k in kwargs]
    for _ in range(3):
        plan = Plan([900, 500, 100], skips=[[], rng.sample(names, 2), []], reuses=[[], [], rng.sample(names, 2)])
        with BlockSwitch(model).follow(plan):
            outputs = [run(model, k) for k in kwargs]
        assert torch.equal(outputs[0], full[0])
        assert all(torch.isfinite(o).all() for o in outputs)
