import dataclasses

import pytest
import torch

from optuna_diffusion.errors import ConfigError
from optuna_diffusion.plan import Plan
from optuna_diffusion.prefix_cache import PrefixCache
from optuna_diffusion.generation import ImageGenerator, SamplingSettings
from optuna_diffusion.solvers import SOLVERS, SOLVER_KINDS

from .helpers import tiny_unet

STEPS = (900, 700, 400, 100)
NO = ((), (), (), ())

# Children of one parent: each shares a prefix with a plan run before it.
SHARING_PLANS = [
    Plan(STEPS),
    Plan((900, 700, 400, 50)),  # differs at the last step
    Plan((900, 700, 300, 100)),  # differs at step 2
    Plan(STEPS, skips=[[], ["mid.attn.0"], [], []]),  # differs at step 1 (a skip)
    Plan((900, 700, 400, 50), skips=[[], ["mid.attn.0"], [], []]),
    Plan(STEPS, reuses=[[], [], ["up.0"], []]),  # a reuse where it first differs: the UNet restarts a step earlier
    Plan((900, 700, 400, 50), reuses=[[], [], ["up.0"], []]),  # first differs right after a reuse
    # Reuses at step 3 a block that did not run at step 2 (inside the reused branch): needs step 1's output.
    Plan(STEPS, reuses=[[], [], ["up.0"], ["mid.attn.0"]]),
    Plan(STEPS),  # seen before: no UNet call at all
]


def model_for(solver, tiny_model):
    """``tiny_model`` for a DDPM-style solver; the same UNet as a flow-matching model for a flow solver."""
    if SOLVER_KINDS[solver] == "ddpm":
        return tiny_model
    from optuna_diffusion.models import DiffusionModel

    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0}
    return DiffusionModel(tiny_unet().requires_grad_(False), config, "tiny-flow")


def in_kind(plans, solver):
    """The plans as plans of the solver's schedule kind (their time steps fit both)."""
    return [dataclasses.replace(plan, schedule_kind=SOLVER_KINDS[solver]) for plan in plans]


def _generate(model, settings, plans, num_samples, cache=None):
    """Samples of every plan, and the UNet calls of each."""
    outputs, passes = [], []
    with ImageGenerator(model, settings, prefix_cache=cache) as sampler:
        for plan in plans:
            before = sampler.forward_passes
            outputs.append(torch.cat(list(sampler.batches(plan, num_samples))))
            passes.append(sampler.forward_passes - before)
    return outputs, passes


def _assert_all_equal(cached, uncached):
    for i, (a, b) in enumerate(zip(cached, uncached)):
        assert torch.equal(a, b), f"plan {i} differs from the uncached run"


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_cached_prefixes_give_exactly_the_uncached_samples(tiny_model, solver):
    settings = SamplingSettings(solver=solver, num_classes=10, batch_size=4)
    model, plans = model_for(solver, tiny_model), in_kind(SHARING_PLANS, solver)
    uncached, full_passes = _generate(model, settings, plans, 6)
    cache = PrefixCache(1 << 24)
    cached, passes = _generate(model, settings, plans, 6, cache)
    _assert_all_equal(cached, uncached)
    assert full_passes == [8] * len(SHARING_PLANS)  # 4 steps x 2 batches
    # UNet calls per batch: the first differing step on (or the last step without reuses before it).
    assert passes == [8, 2, 4, 6, 2, 6, 2, 6, 0]
    assert cache.hits == 8 * len(SHARING_PLANS) - sum(passes)
    assert cache.misses == sum(passes)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_plans_with_different_step_counts_share_their_common_prefix(tiny_model, solver):
    # A variable-K search adds and drops steps: the shorter plans' steps are the longer ones' prefixes.
    settings = SamplingSettings(solver=solver, num_classes=10, batch_size=4)
    plans = [Plan((900, 700, 400)), Plan(STEPS), Plan((900, 700, 400, 100, 20)), Plan((900, 700))]
    model, plans = model_for(solver, tiny_model), in_kind(plans, solver)
    uncached, _ = _generate(model, settings, plans, 4)
    cache = PrefixCache(1 << 24)
    cached, passes = _generate(model, settings, plans, 4, cache)
    _assert_all_equal(cached, uncached)
    assert passes == [3, 1, 1, 0]


def test_runs_of_different_sizes_do_not_share_batches_whose_labels_differ(tiny_model):
    # Labels are drawn for the whole set of num_samples, so samples 0..3 of a 4- and an 8-sample run differ.
    settings = SamplingSettings(solver="ddim", num_classes=10, batch_size=4)
    plan = Plan(STEPS)
    with ImageGenerator(tiny_model, settings) as sampler:
        uncached = [torch.cat(list(sampler.batches(plan, n))) for n in (4, 8)]
    cache = PrefixCache(1 << 24)
    with ImageGenerator(tiny_model, settings, prefix_cache=cache) as sampler:
        cached = [torch.cat(list(sampler.batches(plan, n))) for n in (4, 8)]
    _assert_all_equal(cached, uncached)
    assert cache.hits == 0


def test_prefix_cache_keeps_its_byte_bound_and_evicts_the_least_recently_used():
    entry = torch.zeros(4)  # 16 bytes
    cache = PrefixCache(3 * 16)
    for key in "abc":
        cache.store(key, entry.clone())
    assert cache.fetch(["a"])[0] is not None and cache.hits == 1
    cache.store("d", entry.clone())
    assert "b" not in cache and all(k in cache for k in "acd")
    assert cache.nbytes == 48 and len(cache) == 3 and cache.evictions == 1
    cache.store("huge", torch.zeros(100))  # larger than the whole bound: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 3
    assert cache.prefix_length(["a", "c", "x", "d"]) == 2
    assert cache.misses == 5
    for bad in (-1, 1.5, True, None):
        with pytest.raises(ConfigError, match="max_bytes"):
            PrefixCache(bad)


def test_a_tight_cache_stays_within_its_bound_and_exact(tiny_model):
    settings = SamplingSettings(solver="ddim", num_classes=10, batch_size=4)
    uncached, _ = _generate(tiny_model, settings, SHARING_PLANS, 4)
    one_output = 4 * 1 * 8 * 8 * 4  # a batch of 4 one-channel 8x8 float32 images
    cache = PrefixCache(5 * one_output)  # one trajectory and a bit: LRU must evict
    cached, passes = _generate(tiny_model, settings, SHARING_PLANS, 4, cache)
    _assert_all_equal(cached, uncached)
    assert cache.nbytes <= cache.max_bytes and len(cache) == 5 and cache.evictions > 0
    assert 0 < cache.hits and sum(passes) < 4 * len(SHARING_PLANS)


@pytest.mark.parametrize("solver", ["ddim", "ddpm"])
def test_start_continues_a_run_exactly(tiny_model, solver):
    settings = SamplingSettings(solver=solver, num_classes=10, batch_size=4)
    plan = Plan(STEPS, skips=[[], ["mid.attn.0"], [], []])
    with ImageGenerator(tiny_model, settings) as sampler:
        full = torch.cat(list(sampler.batches(plan, 10)))
        run = sampler.batches(plan, 10)
        first = next(run)  # samples 0..3 only
        run.close()
        rest = list(sampler.batches(plan, 10, start=4))
        assert [len(b) for b in rest] == [4, 2]
        assert torch.equal(torch.cat([first, *rest]), full)
        assert list(sampler.batches(plan, 10, start=10)) == []
        for bad in (-1, 11):
            with pytest.raises(ConfigError, match="start"):
                next(sampler.batches(plan, 10, start=bad))
    # With a cache, the batches of a continuation are keyed by their absolute samples.
    cache = PrefixCache(1 << 24)
    with ImageGenerator(tiny_model, settings, prefix_cache=cache) as sampler:
        run = sampler.batches(plan, 10)
        head = next(run)
        run.close()
        tail = list(sampler.batches(Plan(STEPS), 10, start=4))
        again = torch.cat(list(sampler.batches(plan, 10)))
    assert torch.equal(again, full) and torch.equal(head, full[:4])
    assert cache.hits == 4 + 1 + 1  # samples 0..3 entirely; 4..7 and 8..9 at step 0 only (step 1 skips)
    assert len(tail) == 2


def test_guidance_with_a_prefix_cache_is_exact_and_counts_images_once(tiny_model):
    settings = SamplingSettings(solver="dpmpp-2m", num_classes=10, null_class=10, guidance_scale=3.0, batch_size=4)
    plans = SHARING_PLANS[:3] + SHARING_PLANS[5:8]
    uncached, _ = _generate(tiny_model, settings, plans, 6)
    cache = PrefixCache(1 << 24)
    cached, passes = _generate(tiny_model, settings, plans, 6, cache)
    _assert_all_equal(cached, uncached)
    assert cache.hits > 0 and sum(passes) < 8 * len(plans)
    with ImageGenerator(tiny_model, settings) as sampler:
        list(sampler.batches(Plan((700, 300)), 6))
        # One batched conditional + null call per step and batch; each image counted once.
        assert (sampler.forward_passes, sampler.image_evaluations) == (4, 12)


def test_a_solver_without_one_call_per_step_is_an_internal_error_and_caches_nothing(tiny_model):
    def heun_like(denoise, x, timesteps, schedule, generator=None):
        for t in timesteps:
            x = x - 0.1 * denoise(x, torch.tensor(t))
            x = x - 0.1 * denoise(x, torch.tensor(t))
        return x

    cache = PrefixCache(1 << 24)
    with ImageGenerator(tiny_model, SamplingSettings(num_classes=10), prefix_cache=cache) as sampler:
        sampler.solver = heun_like
        with pytest.raises(RuntimeError, match="internal error"):
            list(sampler.batches(Plan(STEPS), 2))
    assert len(cache) == 0


def test_evaluator_takes_a_cache_or_a_byte_bound(tiny_model):
    import numpy as np

    from optuna_diffusion.evaluation import PlanEvaluator
    from optuna_diffusion.reference_stats import ReferenceStats
    from optuna_diffusion.zoo.feature_net import DigitsFeatureNet

    extractor = DigitsFeatureNet().eval()
    d = extractor.num_features
    reference = ReferenceStats(np.zeros(d), np.eye(d), 10)
    settings = SamplingSettings(num_classes=10)
    cache = PrefixCache(1000)
    for argument, expected in ((0, None), (cache, cache)):
        evaluator = PlanEvaluator(tiny_model, settings, extractor, reference, prefix_cache=argument)
        assert evaluator.generator.prefix_cache is expected
        evaluator.close()
    evaluator = PlanEvaluator(tiny_model, settings, extractor, reference, prefix_cache=1 << 20)
    assert evaluator.generator.prefix_cache.max_bytes == 1 << 20
    evaluator.close()
    with pytest.raises(ConfigError, match="max_bytes"):
        PlanEvaluator(tiny_model, settings, extractor, reference, prefix_cache=-5)
