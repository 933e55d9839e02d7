"""ArchitectureSampler (stage 2): valid plans, growing skip ratio, source Pareto set, storage-backed generations."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import textwrap

import numpy as np
import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from optuna_diffusion.blocks import Block, check_plan_blocks, find_blocks
from optuna_diffusion.errors import ConfigError
from optuna_diffusion.macs import MacsTable
from optuna_diffusion.plan import Plan
from optuna_diffusion.samplers import (
    ArchitectureSampler,
    ChildGeneration,
    ArchitectureSpace,
    TimestepSpace,
    TimestepSampler,
    plan_from_trial,
)

from .conftest import baseline_steps, tiny_unet
from .workers import environment

optuna.logging.set_verbosity(optuna.logging.WARNING)

GENERATION_KEY = "ArchitectureSampler:generation"
HIDDEN = (900, 620, 350, 120)
COMPLETE = (TrialState.COMPLETE,)


@pytest.fixture(scope="module")
def unet_blocks():
    unet = tiny_unet()
    return find_blocks(unet), MacsTable.for_model(unet)


def penalties(blocks):
    """Hidden FID cost of not running each block at a step: a few blocks are nearly free."""
    rng = np.random.default_rng(1)
    return {block.name: float(rng.choice([0.2, 5.0, 20.0], p=[0.3, 0.4, 0.3])) for block in blocks}


def synthetic_fid(plan, penalty):
    steps = sum(abs(a - b) for a, b in zip(plan.timesteps, HIDDEN)) / 10 + 100 * abs(plan.num_steps - len(HIDDEN))
    blocks = sum(penalty[name] for skipped, reused in zip(plan.skips, plan.reuses) for name in skipped | reused)
    return steps + blocks


def stage1(storage, table, *, n_trials=30, name="steps"):
    """A small stage-1 study whose Pareto set has a plan per useful K."""
    sampler = TimestepSampler(k_min=3, k_max=5, population_size=10, num_parents=3, num_mutants=5, num_crossovers=3,
                              initial_plans=[baseline_steps("uniform", k) for k in (3, 4, 5)], seed=0)
    study = optuna.create_study(study_name=name, storage=storage, directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(lambda t: (synthetic_fid(plan := plan_from_trial(t), {}), table.plan_macs(plan)), n_trials=n_trials)
    return study


def stage2_sampler(unet_blocks, **kwargs):
    defaults = dict(source_study="steps", blocks=unet_blocks, population_size=12, num_parents=4, num_mutants=5,
                    num_crossovers=4, ratio_generations=4, seed=0)
    return ArchitectureSampler(**{**defaults, **kwargs})


def stage2_objective(table, penalty, budget=None):
    def objective(trial):
        plan = plan_from_trial(trial)
        macs = table.plan_macs(plan)
        if budget is not None:
            trial.set_constraint("macs", macs - budget)
        return synthetic_fid(plan, penalty), macs

    return objective


def plans_of(study, states=COMPLETE):
    return [plan_from_trial(t) for t in study.get_trials(states=states)]


# Operators ---------------------------------------------------------------------------------------


def test_operators_give_valid_plans_within_the_ratio(unet_blocks):
    blocks, _ = unet_blocks
    space = ArchitectureSpace(blocks=blocks, timestep_space=TimestepSpace(num_train_timesteps=1000, k_min=2, k_max=5))
    branch_reused = inner_dropped = 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        ratio = float(rng.choice([0.0, 0.1, 0.3, 0.6, 1.0]))
        a = space.random(rng, max_ratio=ratio)
        b = space.random(rng, timesteps=space.timestep_space.random(rng), max_ratio=ratio)
        children = [a, b, space.mutate(a, rng, toggle_prob=0.2, max_ratio=ratio, timestep_mutation_prob=0.5)]
        children.append(space.crossover(a, b, rng, max_ratio=ratio))
        for plan in children:
            check_plan_blocks(plan, blocks)
            assert not plan.reuses[0]
            assert space.skip_ratio(plan) <= ratio + 1e-9
            assert space.contains(plan)
        assert children[2] != a or space.budget(a.num_steps, ratio) == 0 and a.timesteps == children[2].timesteps
        # Crossover: the time steps of one parent, per step the choices of either (by position).
        child = children[3]
        assert child.timesteps in (a.timesteps, b.timesteps)
        for i, (skipped, reused) in enumerate(zip(child.skips, child.reuses)):
            parents = [p for p in (a, b) if i < p.num_steps]
            assert skipped <= frozenset().union(*(p.skips[i] for p in parents))
            assert reused <= frozenset().union(*(p.reuses[i] for p in parents))
        branch_reused += sum("up.0" in r for p in children for r in p.reuses)
    # Reusing the branch drops the choices inside it: mutating a plan that skips blocks of up.0 at a step.
    plan = Plan((900, 500), skips=[["mid.attn.0"], ["mid.attn.0", "up.0.attn.1", "up.1.resnet.0"]])
    for seed in range(200):
        child = space.mutate(plan, np.random.default_rng(seed), toggle_prob=0.3, max_ratio=1.0)
        check_plan_blocks(child, blocks)
        if "up.0" in child.reuses[1]:
            inner_dropped += 1
            assert not child.skips[1] & {"mid.attn.0", "up.0.attn.1"}  # inside up.0: dropped
    assert branch_reused > 0 and inner_dropped > 0


def test_refinement_slots_toggle_one_choice_of_a_parent(unet_blocks):
    blocks, _ = unet_blocks
    space = ArchitectureSpace(blocks=blocks, timestep_space=TimestepSpace(num_train_timesteps=1000, k_min=3, k_max=3))
    bound = space.bind(max_ratio=0.5, timestep_mutation_prob=1.0)  # refinements never move the time steps
    parents = [Plan((900, 500, 100), skips=[["mid.attn.0"], [], []]), Plan((800, 400, 50), reuses=[[], ["up.0"], []])]
    generation = ChildGeneration(population_size=10, num_mutants=3, num_crossovers=2, mutation_prob=0.1, num_refinements=3)
    rng = np.random.default_rng(0)
    refined = set()
    for slot in range(30):
        child = generation(rng, space=bound, generation=1, slot=slot, parents=parents)
        if slot % 10 >= 3:
            continue
        parent = next(p for p in parents if p.timesteps == child.timesteps)  # the time steps are kept
        changed = [(i, name) for i in range(3) for name in space.names
                   if space.choices(child)[i].get(name) != space.choices(parent)[i].get(name)]
        assert len(changed) in (1, 2), changed  # one toggle (a reuse may grow to its branch)
        check_plan_blocks(child, blocks)
        refined.add(parent)
    assert refined == set(parents)


def test_mutation_moves_time_steps_and_can_trade_blocks_for_a_step(unet_blocks):
    blocks, _ = unet_blocks
    space = ArchitectureSpace(blocks=blocks, timestep_space=TimestepSpace(num_train_timesteps=1000, k_min=2, k_max=4))
    parent = Plan((900, 500, 100), skips=[["mid.attn.0"], ["up.0.attn.1"], ["up.1.resnet.0"]])
    sizes = collections.Counter()
    for seed in range(300):
        rng = np.random.default_rng(seed)
        child = space.mutate(parent, rng, toggle_prob=0.0, max_ratio=1.0, timestep_mutation_prob=1.0)
        check_plan_blocks(child, blocks)
        assert child.timesteps != parent.timesteps
        sizes[child.num_steps] += 1
        for t, skipped in zip(child.timesteps, child.skips):  # the choices of the parent's step nearest in time
            nearest = min(range(3), key=lambda j: (abs(parent.timesteps[j] - t), j))
            assert skipped == parent.skips[nearest]
    assert set(sizes) == {2, 3, 4}


class OneToggle:
    """A stand-in for numpy's Generator that makes ``mutate`` toggle exactly one (step, block) pair."""

    def __init__(self, index: int, coin: float) -> None:
        self.index, self.coin = index, coin

    def random(self, size=None):
        if size is None:
            return self.coin
        draws = np.ones(size)
        draws[self.index] = 0.0
        return draws

    def permutation(self, values):
        return np.asarray(values)


def test_mutation_can_grow_a_reused_block_into_the_branch_around_it(unet_blocks):
    blocks, _ = unet_blocks
    space = ArchitectureSpace(blocks=blocks, timestep_space=TimestepSpace(num_train_timesteps=1000, k_min=3, k_max=3))
    parent = Plan((900, 500, 100), reuses=[[], [], ["up.0.resnet.1"]])
    toggled = 2 * len(blocks) + [block.name for block in blocks].index("up.0.resnet.1")  # step 2, that block

    grown = space.mutate(parent, OneToggle(toggled, coin=0.0), toggle_prob=0.5, max_ratio=1.0)
    again = space.mutate(parent, OneToggle(toggled, coin=0.9), toggle_prob=0.5, max_ratio=1.0)

    assert grown.reuses[2] == frozenset({"up.0"})  # up.0: the smallest branch around up.0.resnet.1
    assert again.reuses[2] == frozenset() and again.is_full_network


def test_skip_ratio_counts_blocks_inside_a_reused_branch(unet_blocks):
    blocks, _ = unet_blocks
    space = ArchitectureSpace(blocks=blocks, timestep_space=TimestepSpace(num_train_timesteps=1000, k_min=2, k_max=2))
    inside = sum(1 for block in blocks if block.members[0].startswith(("down_blocks.1", "mid_block", "up_blocks.0")))
    plan = Plan((900, 500), reuses=[[], ["up.0"]])
    assert space.not_run(plan) == 1 + inside
    assert space.skip_ratio(plan) == (1 + inside) / (2 * len(blocks))
    assert space.budget(2, 0.1) == int(0.1 * 2 * len(blocks))


# Arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(source_study=""), "source_study"),
        (dict(source_study=3), "source_study"),
        (dict(blocks=[]), "blocks"),
        (dict(blocks="up.0"), "blocks"),
        (dict(population_size=1), "population_size"),
        (dict(num_parents=1), "num_parents"),
        (dict(num_parents=13), "num_parents"),
        (dict(num_mutants=10, num_crossovers=3), "num_mutants"),
        (dict(skip_prob=1.5), "skip_prob"),
        (dict(num_refinements=-1), "num_refinements"),
        (dict(num_refinements=4), "num_refinements"),
        (dict(max_skip_ratio_start=-0.1), "max_skip_ratio_start"),
        (dict(max_skip_ratio_end=2), "max_skip_ratio_end"),
        (dict(max_skip_ratio_start=0.5, max_skip_ratio_end=0.2), "max_skip_ratio_end"),
        (dict(ratio_generations=-1), "ratio_generations"),
        (dict(timestep_mutation_prob=-1), "timestep_mutation_prob"),
        (dict(k_min=0), "k_min"),
        (dict(k_min=4, k_max=3), "k_max"),
        (dict(k_min=4, num_train_timesteps=3), "num_train_timesteps"),
        (dict(seed=-1), "seed"),
        (dict(initial_plans=[(999, 500)]), "Plan"),
        (dict(initial_plans=[Plan((999, 500), skips=[["up.0"], []])]), "only be reused"),
        (dict(initial_plans=[Plan((999, 500), skips=[["nope"], []])]), "unknown block"),
        (dict(initial_plans=[Plan((99, 50), num_train_timesteps=100)]), "num_train_timesteps"),
        (dict(initial_plans=[Plan((999, 500)), Plan((999, 500))]), "twice"),
        (dict(k_min=3, initial_plans=[Plan((999, 500))]), "outside"),
        (dict(source_study=None), "k_min"),
        (dict(max_parent_ratio=0.5), "max_parent_ratio"),
    ],
)
def test_arguments_are_checked_up_front(unet_blocks, kwargs, name):
    blocks, _ = unet_blocks
    with pytest.raises(ConfigError, match=name):
        stage2_sampler(blocks, **kwargs)


def test_unknown_source_study_is_a_one_line_error_naming_the_storage_studies(unet_blocks):
    blocks, _ = unet_blocks
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="steps", storage=storage)
    sampler = stage2_sampler(blocks, source_study="stpes")
    study = optuna.create_study(study_name="joint", storage=storage, sampler=sampler)
    with pytest.raises(ConfigError) as error:
        study.optimize(lambda trial: 0.0, n_trials=1)
    message = str(error.value)
    assert "\n" not in message and "'stpes'" in message and "'steps'" in message and "'joint'" in message
    assert [t.state for t in study.trials] == [TrialState.FAIL]  # not left RUNNING


# Search ------------------------------------------------------------------------------------------


def test_stage2_starts_from_the_source_pareto_set_and_proposes_valid_new_plans(unet_blocks):
    blocks, table = unet_blocks
    storage = optuna.storages.InMemoryStorage()
    source = stage1(storage, table)
    pareto = sorted({plan_from_trial(t) for t in source.best_trials}, key=lambda p: p.timesteps)
    assert len(pareto) >= 2 and all(p.is_full_network for p in pareto)

    sampler = stage2_sampler(blocks, k_max=6)
    study = optuna.create_study(study_name="joint", storage=storage, directions=["minimize"] * 2, sampler=sampler)
    study.optimize(stage2_objective(table, penalties(blocks)), n_trials=72)

    trials = study.trials
    plans = [plan_from_trial(t) for t in trials]
    assert sorted(plans[: len(pareto)], key=lambda p: p.timesteps) == pareto
    assert list(sampler.initial_plans) == plans[: len(pareto)]
    assert all(t.system_attrs[GENERATION_KEY] == 0 for t in trials[:12])
    mutants = plans[len(pareto) : len(pareto) + 5]
    assert sum(not m.is_full_network for m in mutants) >= 3  # mutants add skips and reuses
    for plan in plans:
        check_plan_blocks(plan, blocks)
    assert len(set(plans)) == len(plans)  # no plan evaluated twice
    assert max(t.system_attrs[GENERATION_KEY] for t in trials) >= 4
    # K stays within [the source's fewest, k_max = 6].
    assert all(3 <= p.num_steps <= 6 for p in plans)
    # What people and plots see: the time steps and every block choice as parameters.
    last = trials[-1]
    plan = plans[-1]
    names = [block.name for block in blocks]
    expected_names = {"num_steps", *(f"t{i}" for i in range(plan.num_steps))}
    expected_names |= {f"step{i}/{name}" for i in range(plan.num_steps) for name in names}
    assert set(last.params) == expected_names
    assert [last.params[f"t{i}"] for i in range(plan.num_steps)] == list(plan.timesteps)
    for trial, plan in zip(trials, plans):
        for i in range(plan.num_steps):
            for name in names:
                choice = trial.params[f"step{i}/{name}"]
                assert (choice == "skip") == (name in plan.skips[i])
                assert name not in plan.reuses[i] or choice == "reuse"
                assert choice != "run" or (name not in plan.skips[i] | plan.reuses[i])
    plan = plans[-1]
    assert last.user_attrs == {
        "timesteps": list(plans[-1].timesteps),
        "skips": [sorted(s) for s in plans[-1].skips],
        "reuses": [sorted(r) for r in plans[-1].reuses],
    }
    assert Plan.from_dict(last.system_attrs["optuna_diffusion:plan"]) == plans[-1]


def test_skip_ratio_grows_over_generations(unet_blocks):
    blocks, table = unet_blocks
    storage = optuna.storages.InMemoryStorage()
    stage1(storage, table)
    sampler = stage2_sampler(blocks, max_skip_ratio_start=0.05, max_skip_ratio_end=0.4, ratio_generations=4)
    study = optuna.create_study(study_name="joint", storage=storage, directions=["minimize"] * 2, sampler=sampler)
    # Only MACs matter here, so selection pushes the ratio against its limit.
    study.optimize(lambda trial: (0.0, table.plan_macs(plan_from_trial(trial))), n_trials=72)

    space = sampler.space
    assert [sampler.max_skip_ratio(g) for g in (0, 2, 4, 9)] == pytest.approx([0.05, 0.225, 0.4, 0.4])
    initial = set(sampler.initial_plans)
    largest = collections.defaultdict(float)
    for trial in study.trials:
        generation, plan = trial.system_attrs[GENERATION_KEY], plan_from_trial(trial)
        if plan not in initial:
            assert space.skip_ratio(plan) <= sampler.max_skip_ratio(generation) + 1e-9
        largest[generation] = max(largest[generation], space.skip_ratio(plan))
    assert max(largest) >= 5
    assert largest[0] <= 0.05 + 1e-9 and largest[1] <= 0.1375 + 1e-9
    assert max(largest[g] for g in range(4, max(largest) + 1)) > 0.3


def test_macs_constraint_ranks_infeasible_plans_after_feasible_ones(unet_blocks):
    blocks, table = unet_blocks
    storage = optuna.storages.InMemoryStorage()
    stage1(storage, table)
    budget = 3.4 * table.full  # the full-network plans of 4 and 5 steps are infeasible
    sampler = stage2_sampler(blocks, max_skip_ratio_start=0.3, max_skip_ratio_end=0.6)
    study = optuna.create_study(study_name="joint", storage=storage, directions=["minimize"] * 2, sampler=sampler)
    study.optimize(stage2_objective(table, penalties(blocks), budget), n_trials=60)

    complete = study.get_trials(states=COMPLETE)
    assert all(t.constraints == {"macs": t.values[1] - budget} for t in complete)
    feasible = [t for t in complete if t.constraints["macs"] <= 0]
    assert 4 <= len(feasible) < len(complete)
    # Parent selection over all trials: the infeasible plans, whatever their FID, come last.
    parents = sampler.select_parent(study, 99)
    assert len(parents) == 4 and all(p.constraints["macs"] <= 0 for p in parents)
    assert all(t.constraints["macs"] <= 0 for t in study.best_trials)
    later = [t for t in complete if t.system_attrs[GENERATION_KEY] >= 2]
    earlier = [t for t in complete if t.system_attrs[GENERATION_KEY] == 0]
    share = lambda ts: sum(t.constraints["macs"] <= 0 for t in ts) / len(ts)  # noqa: E731
    assert share(later) > share(earlier)


def test_plans_far_worse_than_the_source_best_at_their_k_are_parents_only_when_too_few_others_are(unet_blocks):
    blocks, table = unet_blocks
    storage = optuna.storages.InMemoryStorage()
    source = stage1(storage, table)
    best = {}
    for trial in source.trials:
        k = plan_from_trial(trial).num_steps
        best[k] = min(best.get(k, float("inf")), trial.values[0])
    sampler = stage2_sampler(blocks, max_skip_ratio_start=0.5, max_skip_ratio_end=0.8)
    study = optuna.create_study(study_name="joint", storage=storage, directions=["minimize"] * 2, sampler=sampler)
    study.optimize(stage2_objective(table, penalties(blocks)), n_trials=40)

    def near(trial):
        return trial.values[0] <= 2 * best[plan_from_trial(trial).num_steps]

    complete = study.get_trials(states=COMPLETE)
    assert sum(map(near, complete)) >= 4 and not all(map(near, complete))  # both kinds exist
    parents = sampler.select_parent(study, 99)
    assert len(parents) == 4 and all(map(near, parents))
    # the cheap end of the front, far worse than stage 1 at its K, is on the front but not a parent
    assert any(not near(t) for t in study.best_trials)
    # without the bound, parents as many as the front are the front, far-worse plans included
    unbounded = stage2_sampler(blocks, max_parent_ratio=None, num_parents=len(study.best_trials))
    unbounded._prepare(study, complete[0])
    assert any(not near(t) for t in unbounded.select_parent(study, 99))
    # too few near plans: the others fill the parent slots
    strict = stage2_sampler(blocks, max_parent_ratio=1.0)
    strict._prepare(study, complete[0])
    assert len(strict.select_parent(study, 99)) == 4


def test_initial_plans_without_source_study(unet_blocks):
    blocks, table = unet_blocks
    initial = [Plan((999, 600, 200)), Plan((999, 600, 200), skips=[["mid.attn.0"], [], []])]
    sampler = stage2_sampler(blocks, source_study=None, initial_plans=initial)
    study = optuna.create_study(directions=["minimize"] * 2, sampler=sampler)
    study.optimize(stage2_objective(table, penalties(blocks)), n_trials=15)
    plans = plans_of(study)
    assert plans[:2] == initial and all(p.num_steps == 3 for p in plans)
    assert len(set(plans)) == len(plans)


def test_seeded_search_is_reproducible(unet_blocks):
    blocks, table = unet_blocks

    def run():
        storage = optuna.storages.InMemoryStorage()
        stage1(storage, table, n_trials=12)
        study = optuna.create_study(study_name="joint", storage=storage, directions=["minimize"] * 2,
                                    sampler=stage2_sampler(blocks, seed=3))
        study.optimize(stage2_objective(table, penalties(blocks)), n_trials=30)
        return plans_of(study)

    assert run() == run()


# Storage: parallel workers -----------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, sys
    import optuna
    from take_turns import take_turns
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    from optuna_diffusion.blocks import Block
    from optuna_diffusion.macs import MacsTable
    from optuna_diffusion.samplers import ArchitectureSampler, plan_from_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with open(sys.argv[2]) as f:
        data = json.load(f)
    blocks = [Block(b["name"], b["kind"], tuple(b["members"])) for b in data["blocks"]]
    table = MacsTable.from_dict(data["table"])
    storage = JournalStorage(JournalFileBackend(sys.argv[1]))
    # Both workers get the same seed on purpose: children still differ (per-trial generators).
    sampler = ArchitectureSampler(source_study="steps", blocks=blocks, population_size=10, num_parents=3,
                                  num_mutants=4, num_crossovers=3, ratio_generations=3, seed=0)
    study = optuna.load_study(study_name="joint", storage=storage, sampler=sampler)

    def objective(trial):
        take_turns(study, trial, sys.argv[-1], int(sys.argv[3]))
        plan = plan_from_trial(trial)
        cost = sum(data["penalty"][n] for s, r in zip(plan.skips, plan.reuses) for n in s | r)
        return cost + sum(abs(a - b) for a, b in zip(plan.timesteps, data["hidden"])) / 10, table.plan_macs(plan)

    study.optimize(objective, n_trials=int(sys.argv[3]))
    """
)


@pytest.mark.slow
def test_two_workers_share_one_generation_sequence(unet_blocks, tmp_path):
    blocks, table = unet_blocks
    path = str(tmp_path / "journal.log")
    storage = JournalStorage(JournalFileBackend(path))
    stage1(storage, table, n_trials=20)
    optuna.create_study(study_name="joint", storage=storage, directions=["minimize"] * 2)
    data = {
        "blocks": [{"name": b.name, "kind": b.kind, "members": list(b.members)} for b in blocks],
        "table": table.to_dict(),
        "penalty": penalties(blocks),
        "hidden": list(HIDDEN),
    }
    data_path = tmp_path / "data.json"
    data_path.write_text(json.dumps(data))
    env = environment()
    command = [sys.executable, "-c", WORKER, path, str(data_path), "25"]
    workers = [subprocess.Popen([*command, f"worker-{i}"], env=env, stderr=subprocess.PIPE) for i in range(2)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=900)  # a safety net only
        assert worker.returncode == 0, stderr.decode()

    study = optuna.load_study(study_name="joint", storage=JournalStorage(JournalFileBackend(path)))
    trials = study.get_trials(states=COMPLETE)
    assert len(trials) == 50
    sizes = collections.Counter(t.system_attrs[GENERATION_KEY] for t in trials)
    assert sorted(sizes) == list(range(len(sizes)))
    assert len(sizes) >= 4
    assert all(size <= 10 + 2 for size in sizes.values())
    plans = plans_of(study)
    assert len(set(plans)) == len(plans)
    for plan in plans:
        check_plan_blocks(plan, [Block(b["name"], b["kind"], tuple(b["members"])) for b in data["blocks"]])
