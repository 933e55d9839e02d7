"""TimestepSampler and its genome operators: validity, search quality, storage-backed generations."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap

import numpy as np
import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState, create_trial

from optuna_diffusion.errors import PlanError
from optuna_diffusion.samplers import (
    TimestepSpace,
    TimestepSampler,
    crossover,
    mutate,
    plan_from_trial,
    random_genome,
    suggest_plan,
    suggest_timesteps,
    timesteps_from_trial,
)
from optuna_diffusion.samplers import check_genome
from optuna_diffusion.samplers import NSGA2ParentSelection

from .conftest import baseline_steps
from .workers import environment

optuna.logging.set_verbosity(optuna.logging.WARNING)

GENERATION_KEY = "TimestepSampler:generation"
HIDDEN = (944, 834, 574, 354, 217, 94)  # the ImageNet64 optimum quoted by AutoDiffusion


def assert_valid(genome, num_train, k_range):
    assert isinstance(genome, tuple) and all(type(t) is int for t in genome)
    assert list(genome) == sorted(set(genome), reverse=True), genome
    assert all(0 <= t < num_train for t in genome)
    assert k_range[0] <= len(genome) <= k_range[1]


def distance(steps, target):
    """FID stand-in: L1 distance of sorted steps to a hidden optimum (plus a penalty per missing step)."""
    return sum(abs(a - b) for a, b in zip(steps, target)) + 1000 * abs(len(steps) - len(target))


def small_sampler(**kwargs):
    defaults = dict(k_min=6, population_size=20, num_parents=4, num_mutants=10, num_crossovers=6, seed=0)
    return TimestepSampler(**{**defaults, **kwargs})


def genomes_of(study):
    return [timesteps_from_trial(t) for t in study.get_trials(states=(TrialState.COMPLETE,))]


# Operators ---------------------------------------------------------------------------------------

SPACES = [(1000, (6, 6)), (1000, (2, 12)), (10, (1, 10)), (10, (4, 4)), (7, (6, 7)), (3, (3, 3))]


@pytest.mark.parametrize("num_train, k_range", SPACES)
def test_operators_always_give_valid_genomes(num_train, k_range):
    kwargs = dict(num_train_timesteps=num_train, k_range=k_range)
    only_one_genome = k_range == (num_train, num_train)
    for seed in range(300):
        rng = np.random.default_rng(seed)
        a, b = random_genome(rng, **kwargs), random_genome(rng, **kwargs)
        assert_valid(a, num_train, k_range)
        for replace_prob in (0.0, 0.25, 1.0):
            child = mutate(a, rng, replace_prob=replace_prob, **kwargs)
            assert_valid(child, num_train, k_range)
            assert child != a or only_one_genome
        child = crossover(a, b, rng, **kwargs)
        assert_valid(child, num_train, k_range)
        assert set(a) & set(b) <= set(child) <= set(a) | set(b)
        assert len(child) in (len(a), len(b))


def test_crossover_never_duplicates_even_when_parents_share_steps_at_other_positions():
    # The official crossover swaps per position, so (900, 500, 100) x (950, 900, 500) could give
    # (900, 900, 500). Here every child has three distinct steps.
    a, b = (900, 500, 100), (950, 900, 500)
    kwargs = dict(num_train_timesteps=1000, k_range=(3, 3))
    children = {crossover(a, b, np.random.default_rng(seed), **kwargs) for seed in range(200)}
    assert children == {(950, 900, 500), (900, 500, 100)}


def test_mutation_moves_locally_or_anywhere_and_can_resize():
    rng = np.random.default_rng(0)
    parent = (900, 600, 300)
    kwargs = dict(num_train_timesteps=1000, k_range=(2, 4))
    children = [mutate(parent, rng, resize_prob=0.5, **kwargs) for _ in range(400)]
    assert {len(c) for c in children} == {2, 3, 4}
    same_k = [c for c in children if len(c) == 3]
    moves = [min(abs(t - p) for p in parent) for c in same_k for t in set(c) - set(parent)]
    assert min(moves) <= 50 and max(moves) > 50  # local moves (<= T // 20) and free replacements


@pytest.mark.parametrize(
    "steps, message",
    [
        ([5, 5, 1], "distinct"),
        ([1000, 3, 1], r"outside \[0, 999\]"),
        ([3, 1], r"outside the allowed \[3, 3\]"),
        ([3.5, 2, 1], "must be an integer"),
        ("321", "list of integers"),
    ],
)
def test_check_genome_refuses_invalid_steps(steps, message):
    with pytest.raises(PlanError, match=message):
        check_genome(steps, num_train_timesteps=1000, k_range=(3, 3))
    assert check_genome([1, 500, 3], num_train_timesteps=1000, k_range=(3, 3)) == (500, 3, 1)


def test_genome_space_binds_the_operators():
    space = TimestepSpace(num_train_timesteps=100, k_min=2, k_max=4)
    rng = np.random.default_rng(0)
    genome = space.random(rng)
    assert space.contains(genome) and space.contains(space.mutate(genome, rng))
    assert space.contains(space.crossover(genome, space.random(rng), rng))
    neighbour = space.refine(genome, rng)
    assert len(neighbour) == len(genome) and len(set(neighbour) - set(genome)) == 1  # one step moved
    assert not space.contains((1, 50)) and not space.contains((99, 1, 1)) and not space.contains("99,1")
    with pytest.raises(ValueError, match="k_range"):
        TimestepSpace(num_train_timesteps=3, k_min=2, k_max=4)


def test_refine_nudges_one_step_by_small_and_large_moves_and_stays_valid_at_the_edges():
    space = TimestepSpace(num_train_timesteps=1000, k_min=4, k_max=4)
    rng = np.random.default_rng(0)
    moves = []
    for _ in range(300):
        neighbour = space.refine((908, 356, 160, 52), rng)
        (old,), (new,) = set((908, 356, 160, 52)) - set(neighbour), set(neighbour) - set((908, 356, 160, 52))
        moves.append(abs(new - old))
    assert max(moves) <= 64 and sum(m <= 8 for m in moves) > 100 and sum(m > 8 for m in moves) > 100
    crowded = (999, 998, 997, 0)  # no room above 999 or below 0; neighbours in use
    for _ in range(50):
        assert space.contains(space.refine(crowded, rng)) and space.refine(crowded, rng) != crowded



def test_refinements_polish_the_best_parent_and_the_sampler_refines_only_its_best_plan():
    from optuna_diffusion.samplers import ChildGeneration

    space = TimestepSpace(num_train_timesteps=1000, k_min=4, k_max=4)
    best, other = (908, 356, 160, 52), (700, 500, 300, 100)
    rng = np.random.default_rng(0)
    focused = ChildGeneration(population_size=10, num_mutants=0, num_crossovers=0, mutation_prob=0.25,
                              num_refinements=10, refine_best=True)
    spread = ChildGeneration(population_size=10, num_mutants=0, num_crossovers=0, mutation_prob=0.25, num_refinements=10)

    def moved_from(generation):
        return {len(set(child) & set(best)) == 3 for child in (generation(rng, space=space, generation=1, slot=s,
                                                                          parents=[best, other]) for s in range(40))}

    assert moved_from(focused) == {True} and moved_from(spread) == {True, False}
    # The sampler: each refinement of generation 1 polishes generation 0's best plan: one step nudged,
    # or, once enough plans around it are evaluated, every step moved within the trust region.
    sampler = TimestepSampler(k_min=4, population_size=10, num_parents=4, num_mutants=0, num_crossovers=0,
                              num_refinements=10, seed=0)
    study = optuna.create_study(sampler=sampler)
    distance = lambda steps: sum(abs(a - b) for a, b in zip(steps, best))  # noqa: E731
    study.optimize(lambda trial: distance(timesteps_from_trial(trial)), n_trials=20)
    first_best = min(study.trials[:10], key=lambda t: t.value).user_attrs["timesteps"]
    for trial in study.trials[10:]:
        moves = [abs(a - b) for a, b in zip(timesteps_from_trial(trial), first_best)]
        assert 0 < max(moves) <= 24 or (sorted(moves)[-2] == 0 and max(moves) <= 64)  # trust radius at T = 1000: 24

# Arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(k_min=0), "k_min"),
        (dict(k_min=4, k_max=3), "k_max"),
        (dict(k_min=4, num_train_timesteps=3), "k_max"),
        (dict(k_min=4, num_train_timesteps=0), "num_train_timesteps"),
        (dict(k_min=4, population_size=1), "population_size"),
        (dict(k_min=4, num_parents=1), "num_parents"),
        (dict(k_min=4, num_parents=51), "num_parents"),
        (dict(k_min=4, num_mutants=-1), "num_mutants"),
        (dict(k_min=4, num_crossovers=-1), "num_crossovers"),
        (dict(k_min=4, num_mutants=40, num_crossovers=11), "num_mutants"),
        (dict(k_min=4, mutation_prob=1.5), "mutation_prob"),
        (dict(k_min=4, seed=-1), "seed"),
        (dict(k_min=4, seed=1.5), "seed"),
        (dict(k_min=4, initial_plans=[[999, 999, 1, 0]]), "distinct"),
        (dict(k_min=4, initial_plans=[[999, 1, 0]]), "allowed"),
        (dict(k_min=4, initial_plans=[(999, 500, 1, 0), (0, 1, 500, 999)]), "twice"),
        (dict(k_min=1, initial_plans=[[t] for t in range(51)]), "at most"),
    ],
)
def test_arguments_are_checked_up_front(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TimestepSampler(**kwargs)


# Sampling ----------------------------------------------------------------------------------------


def test_first_generation_holds_initial_plans_and_their_mutants():
    plans = [baseline_steps("uniform", 6), baseline_steps("quadratic", 6)]
    study = optuna.create_study(sampler=small_sampler(initial_plans=plans))
    study.optimize(lambda trial: distance(timesteps_from_trial(trial), HIDDEN), n_trials=20)
    trials = study.trials
    assert [timesteps_from_trial(t) for t in trials[:2]] == plans
    assert all(t.system_attrs[GENERATION_KEY] == 0 for t in trials)
    mutants = [timesteps_from_trial(t) for t in trials[2:12]]
    assert all(max(len(set(m) & set(p)) for p in plans) >= 1 for m in mutants)
    # What people and plots see: the steps as parameters t0..t5, answered by the sampler.
    assert trials[0].params == {"num_steps": 6, **{f"t{i}": t for i, t in enumerate(plans[0])}}
    assert trials[0].user_attrs == {"timesteps": list(plans[0])}
    assert all(t.params[f"t{i}"] == step for t in trials for i, step in enumerate(timesteps_from_trial(t)))


def test_sampler_improves_over_generations_and_beats_random_search():
    for seed in range(3):
        study = optuna.create_study(sampler=small_sampler(seed=seed, initial_plans=[baseline_steps("uniform", 6)]))
        study.optimize(lambda trial: distance(timesteps_from_trial(trial), HIDDEN), n_trials=150)
        best_per_generation = collections.defaultdict(lambda: float("inf"))
        for trial in study.trials:
            generation = trial.system_attrs[GENERATION_KEY]
            best_per_generation[generation] = min(best_per_generation[generation], trial.value)
        assert max(best_per_generation) >= 6
        assert min(best_per_generation[g] for g in (5, 6, 7)) < 0.75 * best_per_generation[0]
        genomes = genomes_of(study)
        assert len(set(genomes)) == len(genomes) == 150

        random_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        random_study.optimize(lambda trial: distance(suggest_timesteps(trial, k_min=6), HIDDEN), n_trials=150)
        assert study.best_value < random_study.best_value


def test_seeded_search_is_reproducible():
    def run():
        study = optuna.create_study(sampler=small_sampler(k_min=3, k_max=8, seed=7))
        study.optimize(lambda trial: distance(timesteps_from_trial(trial), HIDDEN), n_trials=50)
        return genomes_of(study)

    assert run() == run()


def test_two_objective_search_keeps_a_front_over_several_k():
    hidden = {k: random_genome(np.random.default_rng(k), num_train_timesteps=1000, k_range=(k, k)) for k in range(3, 9)}

    def objective(trial):
        steps = timesteps_from_trial(trial)
        fid = 1000 / len(steps) + distance(steps, hidden[len(steps)]) / (10 * len(steps))
        return fid, len(steps)

    study = optuna.create_study(directions=["minimize", "minimize"], sampler=small_sampler(k_min=3, k_max=8))
    study.optimize(objective, n_trials=150)
    assert len({len(timesteps_from_trial(t)) for t in study.best_trials}) >= 3
    genomes = genomes_of(study)
    assert len(set(genomes)) == len(genomes)
    assert {t.params["num_steps"] for t in study.trials} == set(range(3, 9))


def test_parent_selection_is_nsga2_with_constraints():
    study = optuna.create_study(directions=["minimize", "minimize"])

    def trial(number, values, violation=None):
        frozen = create_trial(values=values, constraints=None if violation is None else {"macs": violation})
        frozen.number = number
        return frozen

    population = [
        trial(0, [1.0, 9.0], 0.0),
        trial(1, [9.0, 1.0], 0.0),
        trial(2, [5.0, 5.0], 0.0),
        trial(3, [6.0, 6.0], 0.0),  # dominated by 2
        trial(4, [0.0, 0.0], 2.0),  # best values, but infeasible
        trial(5, [0.0, 0.0], 1.0),  # infeasible, smaller violation
    ]
    numbers = [t.number for t in NSGA2ParentSelection(num_parents=3)(study, population)]
    assert sorted(numbers) == [0, 1, 2]
    numbers = [t.number for t in NSGA2ParentSelection(num_parents=5)(study, population)]
    assert sorted(numbers) == [0, 1, 2, 3, 5]

    single = optuna.create_study()
    population = [trial(i, [v]) for i, v in enumerate([5.0, 1.0, 3.0, 2.0])]
    assert [t.number for t in NSGA2ParentSelection(num_parents=2)(single, population)] == [1, 3]


def test_exhausted_space_stops_without_hanging():
    # C(6, 3) = 20 genomes exist: the first 20 trials take them all, then duplicates are allowed.
    sampler = TimestepSampler(
        k_min=3, num_train_timesteps=6, population_size=5, num_parents=2, num_mutants=2, num_crossovers=2, seed=0
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda trial: distance(timesteps_from_trial(trial), (5, 3, 1)), n_trials=24)
    genomes = genomes_of(study)
    assert len(set(genomes[:18])) == 18
    assert len(set(genomes)) >= 19


def test_failed_trials_do_not_stall_the_search():
    def objective(trial):
        steps = timesteps_from_trial(trial)
        if trial.number % 3 == 0:
            raise RuntimeError("out of memory")
        return distance(steps, HIDDEN)

    sampler = small_sampler(population_size=6, num_parents=2, num_mutants=2, num_crossovers=2)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=30, catch=(RuntimeError,))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 20
    assert max(t.system_attrs[GENERATION_KEY] for t in complete) >= 2


# Helpers -----------------------------------------------------------------------------------------


def test_suggest_timesteps_works_under_any_sampler():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: len(suggest_timesteps(trial, k_min=2, k_max=5, num_train_timesteps=8)), n_trials=60)
    for trial in study.trials:
        steps = tuple(trial.user_attrs["timesteps"])
        assert_valid(steps, 8, (2, 5))
        assert len(steps) == trial.params["num_steps"]
        assert timesteps_from_trial(trial) == steps
    # Code i is the index among the values still free: 3 -> step 3, then 3 -> the 4th of {0, 1, 2, 4, ...}.
    fixed = optuna.trial.FixedTrial({"num_steps": 2, "timestep_code_0": 3, "timestep_code_1": 3})
    assert suggest_timesteps(fixed, k_min=2, num_train_timesteps=8) == (4, 3)


def test_plan_from_trial_explains_missing_or_conflicting_steps():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    with pytest.raises(PlanError, match="suggest_plan"):
        timesteps_from_trial(study.ask())

    study = optuna.create_study(sampler=small_sampler(k_min=3, k_max=5, initial_plans=[(999, 500, 1)]))
    study.enqueue_trial({"num_steps": 4})
    with pytest.raises(PlanError, match="fixed or enqueued"):
        timesteps_from_trial(study.ask())

    study = optuna.create_study(sampler=small_sampler(k_min=3, k_max=5))
    with pytest.raises(PlanError, match="does not fit"):
        suggest_timesteps(study.ask(), k_min=6)


# Storage: parallel workers and resumed studies ---------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    import optuna
    from take_turns import take_turns
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    from optuna_diffusion.samplers import TimestepSampler, timesteps_from_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    hidden = (944, 834, 574, 354, 217, 94)
    storage = JournalStorage(JournalFileBackend(sys.argv[1]))
    # Both workers get the same seed on purpose: children still differ (per-trial generators).
    sampler = TimestepSampler(k_min=6, population_size=10, num_parents=3, num_mutants=5, num_crossovers=3, seed=0)
    study = optuna.load_study(study_name="parallel", storage=storage, sampler=sampler)

    def objective(trial):
        take_turns(study, trial, sys.argv[-1], int(sys.argv[2]))
        steps = timesteps_from_trial(trial)
        return sum(abs(a - b) for a, b in zip(steps, hidden))

    study.optimize(objective, n_trials=int(sys.argv[2]))
    """
)


@pytest.mark.slow
def test_two_workers_share_one_generation_sequence(tmp_path):
    path = str(tmp_path / "journal.log")
    storage = JournalStorage(JournalFileBackend(path))
    optuna.create_study(study_name="parallel", storage=storage)
    env = environment()
    command = [sys.executable, "-c", WORKER, path, "30"]
    workers = [subprocess.Popen([*command, f"worker-{i}"], env=env, stderr=subprocess.PIPE) for i in range(2)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=900)  # a safety net only
        assert worker.returncode == 0, stderr.decode()

    study = optuna.load_study(study_name="parallel", storage=JournalStorage(JournalFileBackend(path)))
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 60
    sizes = collections.Counter(t.system_attrs[GENERATION_KEY] for t in trials)
    assert sorted(sizes) == list(range(len(sizes)))
    assert len(sizes) >= 5
    assert all(size <= 10 + 2 for size in sizes.values())
    genomes = genomes_of(study)
    assert len(set(genomes)) == len(genomes)


def test_resumed_study_continues_the_generation_count(tmp_path):
    path = str(tmp_path / "journal.log")

    def run(n_trials):
        storage = JournalStorage(JournalFileBackend(path))
        sampler = small_sampler(population_size=10, num_parents=3, num_mutants=5, num_crossovers=3)
        study = optuna.create_study(study_name="resume", storage=storage, sampler=sampler, load_if_exists=True)
        study.optimize(lambda trial: distance(timesteps_from_trial(trial), HIDDEN), n_trials=n_trials)
        return study

    run(25)
    study = run(25)
    generations = [t.system_attrs[GENERATION_KEY] for t in study.trials]
    assert generations == [n // 10 for n in range(50)]
    genomes = genomes_of(study)
    assert len(set(genomes)) == len(genomes)


def test_plan_from_trial_gives_a_plan_that_skips_nothing():
    from optuna_diffusion.plan import Plan

    study = optuna.create_study(sampler=small_sampler(k_min=3, k_max=5, num_train_timesteps=500))
    study.optimize(lambda trial: plan_from_trial(trial).num_steps, n_trials=3)
    for trial in study.trials:
        plan = plan_from_trial(trial)
        assert isinstance(plan, Plan) and plan.is_full_network and plan.num_train_timesteps == 500
        assert plan.timesteps == timesteps_from_trial(trial)
        assert trial.user_attrs == {"timesteps": list(plan.timesteps)}  # no empty skips and reuses

    fixed = optuna.trial.FixedTrial({"num_steps": 2, "timestep_code_0": 3, "timestep_code_1": 3})
    assert suggest_plan(fixed, k_min=2, num_train_timesteps=8) == Plan((4, 3), num_train_timesteps=8)
