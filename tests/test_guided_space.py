"""Stage 1's model-guided children: TPE proposals where the good plans are, GP refinements near the best."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from optuna_diffusion.errors import ConfigError
from optuna_diffusion.samplers import (
    ChildGeneration,
    GuidedTimestepSpace,
    SolverTimestepSpace,
    TimestepSampler,
    TimestepSpace,
    timesteps_from_trial,
)
from optuna_diffusion.samplers._guided_space import MIN_EVALUATED, MIN_LOCAL
from optuna_diffusion.samplers._timestep_mutation import long_moves
from optuna_diffusion.samplers._timestep_transfer import insertions, removals

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD = (908, 356, 160, 52)


def fid_stand_in(steps) -> float:
    """Low near GOOD, high far from it (an FID stand-in with one basin)."""
    return 1.0 + sum(abs(a - b) for a, b in zip(steps, GOOD)) / 100


def evaluated_plans(space, count, rng):
    genomes = {space.random(rng) for _ in range(count)}
    return tuple((genome, fid_stand_in(genome)) for genome in sorted(genomes))


def test_proposals_fall_where_the_good_plans_are():
    space = TimestepSpace(num_train_timesteps=1000, k_min=4, k_max=4)
    evaluated = evaluated_plans(space, 60, np.random.default_rng(0))
    guided = GuidedTimestepSpace(space, evaluated)
    rng = np.random.default_rng(1)
    proposals = [guided.propose(rng) for _ in range(40)]
    randoms = [space.random(rng) for _ in range(40)]
    for genome in proposals:
        assert space.contains(genome)
    assert np.median([fid_stand_in(g) for g in proposals]) < 0.7 * np.median([fid_stand_in(g) for g in randoms])


def test_over_several_k_children_work_at_a_uniformly_drawn_k():
    space = TimestepSpace(num_train_timesteps=1000, k_min=3, k_max=6)
    rng = np.random.default_rng(0)
    five_step = tuple((g, 1.0) for g in {space.refine((900, 700, 400, 200, 50), rng) for _ in range(MIN_EVALUATED)})
    assert len(five_step) == MIN_EVALUATED
    guided = GuidedTimestepSpace(space, five_step)
    # proposals: TPE at K = 5, the only K with enough plans; random (any K) at the others
    proposals = [guided.propose(rng) for _ in range(40)]
    assert {len(genome) for genome in proposals} == {3, 4, 5, 6}
    too_few = GuidedTimestepSpace(space, five_step[:-1])
    seeded = [np.random.default_rng(7) for _ in range(2)]
    seeded[1].integers(3, 7)  # the K drawn
    assert too_few.propose(seeded[0]) == space.random(seeded[1])
    # refinements: near the best plan of the drawn K, whichever plan they are given, or a neighbour's moved there
    best_three, best_five = (800, 400, 100), min(five_step, key=lambda plan: plan[1])[0]
    guided = GuidedTimestepSpace(space, ((best_three, 2.0), ((700, 300, 50), 3.0), *five_step))
    transfers = {k: set(guided.transfers_to((k, None))) for k in (3, 4, 5, 6)}
    refined = [guided.refine((990, 600, 300, 200), rng) for _ in range(80)]
    assert {len(genome) for genome in refined} == {3, 4, 5, 6}
    assert transfers[6] and {genome for genome in refined if len(genome) == 6} <= transfers[6]  # K = 6: only transfers
    for genome in refined:
        if genome not in transfers[len(genome)]:
            near = {3: best_three, 4: (990, 600, 300, 200), 5: best_five}[len(genome)]
            assert max(abs(a - b) for a, b in zip(genome, near)) <= 64  # a nudge (too few plans around)


def test_a_plan_moves_to_k_plus_1_by_a_step_inserted_in_a_gap_and_to_k_minus_1_by_a_step_removed():
    assert insertions((900, 500, 100), 0, 999) == [
        (950, 900, 500, 100), (900, 700, 500, 100), (900, 500, 300, 100), (900, 500, 100, 49)]
    assert insertions((1000, 999, 1), 1, 1000) == [(1000, 999, 500, 1)]  # full gaps give nothing (flow: [1, T])
    assert removals((900, 500, 100)) == [(500, 100), (900, 100), (900, 500)]
    assert removals((900,)) == []


def test_over_several_k_a_refinement_starts_a_k_from_its_neighbours_best_plans_until_each_is_evaluated():
    space = TimestepSpace(num_train_timesteps=1000, k_min=3, k_max=5)
    three, four, five = (900, 500, 100), (950, 600, 300, 80), (960, 700, 450, 200, 40)
    evaluated = ((three, 4.0), ((800, 400, 50), 6.0), (four, 3.0), (five, 2.0))
    guided = GuidedTimestepSpace(space, evaluated)
    expected = set(insertions(three, 0, 999)) | set(removals(five))
    assert set(guided.transfers_to((4, None))) == expected  # the best of K - 1 and of K + 1, never the worse plan
    assert set(guided.transfers_to((3, None))) == set(removals(four))
    assert guided.transfers_to((5, None)) == insertions(four, 0, 999)
    rng = np.random.default_rng(0)
    refined_four = [genome for genome in (guided.refine(four, rng) for _ in range(120)) if len(genome) == 4]
    moved = [genome for genome in refined_four if genome in expected]
    assert 0.3 < len(moved) / len(refined_four) < 0.7  # half transfers, half polishing the K's own best
    done = GuidedTimestepSpace(space, (*evaluated, *((genome, 5.0) for genome in expected)))
    assert done.transfers_to((4, None)) == []
    assert all(genome not in expected for genome in (done.refine(four, rng) for _ in range(40)))
    # with the solver searched, plans move between the K of one solver only
    solvers = SolverTimestepSpace(TimestepSpace(num_train_timesteps=1000, k_min=3, k_max=4), ("ddim", "dpmpp-2m"))
    by_solver = GuidedTimestepSpace(solvers, ((solvers.check(three, "ddim"), 4.0),))
    assert by_solver.transfers_to((4, "dpmpp-2m")) == []
    assert {genome.solver for genome in by_solver.transfers_to((4, "ddim"))} == {"ddim"}


def test_refinements_model_the_plans_around_the_refined_one_and_nudge_while_too_few_are_known():
    space = TimestepSpace(num_train_timesteps=1000, k_min=4, k_max=4)
    rng = np.random.default_rng(0)
    start = (930, 380, 140, 70)  # near GOOD, inside its trust region
    around = {tuple(t + int(rng.integers(-24, 24 + 1)) for t in start) for _ in range(30)}
    evaluated = tuple((genome, fid_stand_in(genome)) for genome in sorted(around))
    guided = GuidedTimestepSpace(space, evaluated)
    assert guided.trust_radius == 24  # 2.4% of 1,000 steps; it scales with the range:
    assert GuidedTimestepSpace(TimestepSpace(num_train_timesteps=100, k_min=4, k_max=4), ()).trust_radius == 2
    refined = [guided.refine(start, rng) for _ in range(10)]
    nudged = [space.refine(start, rng) for _ in range(10)]
    for genome in refined:
        assert space.contains(genome) and max(abs(a - b) for a, b in zip(genome, start)) <= 24
    assert np.median([fid_stand_in(g) for g in refined]) < np.median([fid_stand_in(g) for g in nudged]) - 0.1
    few = GuidedTimestepSpace(space, evaluated[: MIN_LOCAL - 1])
    seeded = [np.random.default_rng(7) for _ in range(2)]
    assert few.refine(start, seeded[0]) == space.refine(start, seeded[1])  # a nudge
    # plans stopped at the low fidelity (their FID an estimate) stay out of the GP: here too few are left
    estimated = frozenset(genome for genome, _ in evaluated[MIN_LOCAL - 1:])
    mostly_estimates = GuidedTimestepSpace(space, evaluated, estimated=estimated)
    seeded = [np.random.default_rng(7) for _ in range(2)]
    assert mostly_estimates.refine(start, seeded[0]) == space.refine(start, seeded[1])

def test_a_step_moves_far_by_an_eighth_a_quarter_or_half_of_the_range_either_way_within_it():
    moves = long_moves((900, 500, 100), 0, 999)
    assert (999, 500, 100) in moves and (650, 500, 100) in moves and (900, 500, 225) in moves  # clamped; 1/4; 1/8
    assert (900, 500, 0) in moves and (900, 100, 0) in moves  # 100 - 125 clamped; 500 - 500 (order kept by sorting)
    assert all(len(set(genome)) == 3 and genome == tuple(sorted(genome, reverse=True)) for genome in moves)
    assert len(moves) == len(set(moves)) and (900, 500, 100) not in moves


def test_once_the_best_plan_is_stale_the_proposals_are_long_moves_of_it_until_each_is_tried():
    from optuna_diffusion.samplers._guided_space import STALL_EVALUATIONS

    space = TimestepSpace(num_train_timesteps=1000, k_min=4, k_max=4)
    rng = np.random.default_rng(0)
    best = (930, 380, 140, 70)
    around = sorted({tuple(t + int(rng.integers(-20, 21)) for t in best) for _ in range(2 * STALL_EVALUATIONS)} - {best})
    around = around[:STALL_EVALUATIONS]
    fresh = GuidedTimestepSpace(space, ((around[0], 2.5), (best, 2.0), *((g, 2.5) for g in around[1:])))
    stale = GuidedTimestepSpace(space, ((best, 2.0), *((g, 2.5) for g in around)))
    assert not fresh.stalled((4, None)) and stale.stalled((4, None))  # the last 40 improved the best by 20%, by 0%
    barely = GuidedTimestepSpace(space, ((best, 2.0), *((g, 2.5) for g in around[:-1]), (around[-1], 1.99)))
    assert barely.stalled((4, None))  # by 0.5%: still stalled
    moves = set(long_moves(best, 0, 999))
    assert set(stale.long_moves_of(best)) == moves
    assert all(stale.propose(rng) in moves for _ in range(8))
    assert not any(fresh.propose(rng) in moves for _ in range(8))
    tried = GuidedTimestepSpace(space, (*stale.evaluated, *((genome, 3.0) for genome in moves)))
    assert tried.long_moves_of(best) == []  # each long move is tried once; then TPE proposes again:
    assert not any(tried.propose(rng) in moves for _ in range(8))
    nudged = (931, 380, 140, 70)  # the best plan nudged by one step: its long moves land where best's did
    assert {len(guided.long_moves_of(nudged)) for guided in (stale, tried)} == {len(long_moves(nudged, 0, 999)), 0}


def test_a_stale_search_also_polishes_the_best_plan_of_another_basin():
    from optuna_diffusion.samplers._guided_space import STALL_EVALUATIONS

    space = TimestepSpace(num_train_timesteps=1000, k_min=4, k_max=4)
    rng = np.random.default_rng(1)
    best, rival, worse_rival = (960, 574, 232, 64), (960, 356, 232, 64), (700, 574, 232, 64)
    around = sorted({tuple(t + int(rng.integers(-20, 21)) for t in best) for _ in range(2 * STALL_EVALUATIONS)} - {best})
    crowd = tuple((genome, 2.7) for genome in around[:STALL_EVALUATIONS])  # near the best: the same basin
    evaluated = ((best, 2.6), (worse_rival, 3.5), (rival, 3.1), *crowd)
    stale = GuidedTimestepSpace(space, evaluated)
    assert stale.stalled((4, None)) and stale.rival_of(best) == rival  # 218 steps away: another basin
    assert GuidedTimestepSpace(space, evaluated, estimated=frozenset({rival})).rival_of(best) == worse_rival
    assert GuidedTimestepSpace(space, ((best, 2.6), *crowd)).rival_of(best) is None  # one basin only
    refined = [stale.refine(best, rng) for _ in range(40)]
    near_rival = sum(max(abs(a - b) for a, b in zip(genome, rival)) <= 64 for genome in refined)
    assert 10 <= near_rival <= 30  # half of the refinements; the other half polish the best plan
    fresh = GuidedTimestepSpace(space, ((best, 2.6), (rival, 3.1)))
    assert not any(max(abs(a - b) for a, b in zip(fresh.refine(best, rng), rival)) <= 64 for _ in range(8))


def test_tpe_is_fitted_on_the_best_plan_of_each_trust_region_not_on_the_refinements_crowd():
    space = TimestepSpace(num_train_timesteps=1000, k_min=4, k_max=4)
    rng = np.random.default_rng(0)
    crowd_centre = (978, 607, 217, 65)  # a basin away from GOOD, crowded by refinements
    crowd = {tuple(t + int(rng.integers(-10, 11)) for t in crowd_centre) for _ in range(30)}
    spread = evaluated_plans(space, 15, rng)
    plans = [(genome, 1.5 + sum(abs(a - b) for a, b in zip(genome, crowd_centre)) / 1000) for genome in crowd]
    guided = GuidedTimestepSpace(space, (*spread, *plans))
    thinned = guided._thinned(list(guided.evaluated))
    assert [genome for genome, _ in thinned if genome in crowd] == [min(plans, key=lambda plan: plan[1])[0]]
    assert len(thinned) == 16  # the crowd's best and the 15 spread plans (each far from the others)


def test_with_the_solver_searched_children_work_on_one_solvers_plans_at_a_time():
    space = SolverTimestepSpace(TimestepSpace(num_train_timesteps=1000, k_min=4, k_max=4), ("ddim", "dpmpp-2m"))
    wanted = {"ddim": GOOD, "dpmpp-2m": (700, 300, 120, 20)}  # each solver wants its own steps

    def distance(genome) -> float:
        return sum(abs(a - b) for a, b in zip(genome.timesteps, wanted[genome.solver])) / 100

    def fid(genome) -> float:  # DDIM is behind at any steps
        return 1.0 + distance(genome) + (5.0 if genome.solver == "ddim" else 0.0)

    rng = np.random.default_rng(0)
    evaluated = tuple((genome, fid(genome)) for genome in sorted({space.random(rng) for _ in range(80)}))
    guided = GuidedTimestepSpace(space, evaluated)
    proposals = [guided.propose(rng) for _ in range(40)]
    randoms = [space.random(rng) for _ in range(40)]
    assert all(space.contains(genome) for genome in proposals)
    assert {genome.solver for genome in proposals} == {"ddim", "dpmpp-2m"}  # a solver behind is not left to chance
    for solver in wanted:  # each solver's proposals fall near the steps it wants
        mine = [distance(genome) for genome in proposals if genome.solver == solver]
        assert np.median(mine) < 0.5 * np.median([distance(genome) for genome in randoms if genome.solver == solver])
    best = {solver: min((p for p in evaluated if p[0].solver == solver), key=lambda p: p[1])[0] for solver in wanted}
    refined = [guided.refine(evaluated[0][0], rng) for _ in range(40)]

    def polished(genome, plan) -> bool:  # a nudge or a GP draw near ``plan``
        return plan is not None and max(abs(a - b) for a, b in zip(genome.timesteps, plan.timesteps)) <= 64

    # random plans: the last 40 did not improve either solver's best, so a refinement may also polish its rival basin
    near = [{solver for solver, plan in best.items() if polished(genome, plan) or polished(genome, guided.rival_of(plan))}
            for genome in refined]
    assert all(near) and set().union(*near) == {"ddim", "dpmpp-2m"}  # each polishes a plan of either solver


def test_sampler_fills_proposal_slots_from_tpe_and_checks_the_split():
    sampler = TimestepSampler(
        k_min=4, population_size=10, num_parents=2, num_mutants=2, num_crossovers=2, num_proposals=6, seed=0
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda trial: fid_stand_in(timesteps_from_trial(trial)), n_trials=40)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    later = [fid_stand_in(timesteps_from_trial(t)) for t in trials[20:]]
    first = [fid_stand_in(timesteps_from_trial(t)) for t in trials[:10]]
    assert np.median(later) < 0.5 * np.median(first)
    with pytest.raises(ConfigError, match="num_proposals"):
        TimestepSampler(k_min=4, population_size=10, num_parents=2, num_mutants=5, num_crossovers=3, num_proposals=3)


def test_a_space_without_proposals_gives_random_genomes_in_those_slots():
    space = TimestepSpace(num_train_timesteps=1000, k_min=4, k_max=4)
    generation = ChildGeneration(population_size=10, num_mutants=2, num_crossovers=2, num_proposals=6, mutation_prob=0.25)
    make = generation.operator(space=space, generation=1, slot=5, parents=[GOOD, (900, 500, 200, 10)])
    assert make == space.random
    guided = GuidedTimestepSpace(space, ())
    assert generation.operator(space=guided, generation=1, slot=5, parents=[GOOD]) == guided.propose


def test_a_studys_stage_1_at_one_k_fills_generations_with_refinements_and_proposals():
    from optuna_diffusion.population import population_split, stage_population

    split = stage_population("timesteps", 20)
    assert split["num_refinements"] + split["num_proposals"] == 20 and split["num_mutants"] == split["num_crossovers"] == 0
    TimestepSampler(k_min=4, **split)  # a valid split
    several = stage_population("timesteps", 20, step_counts=7)  # over several K: more refinements (and transfers)
    assert several["num_refinements"] > split["num_refinements"] and several["num_mutants"] == 0
    assert several["num_refinements"] + several["num_proposals"] == 20
    assert {key: several[key] for key in population_split(20)} == {**population_split(20), "num_mutants": 0, "num_crossovers": 0}
