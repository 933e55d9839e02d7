"""The solver as part of the plan: settings, the joint genome, storage, both stages and export."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import optuna
import pytest

from optuna_diffusion.errors import ConfigError
from optuna_diffusion.evaluation import DIGITS_SETTINGS, digits_evaluator
from optuna_diffusion.plan import Plan
from optuna_diffusion.runner import run_optimize
from optuna_diffusion.generation import SamplingSettings
from optuna_diffusion.samplers import (
    ArchitectureSampler,
    SolverSteps,
    SolverTimestepSpace,
    TimestepSampler,
    TimestepSpace,
    plan_from_trial,
    stored_plan,
)
from optuna_diffusion.solvers import DISTINCT_SOLVERS, searched_solvers
from optuna_diffusion.study_config import load_study_config, parse_study_config, with_overrides
from optuna_diffusion.trial_plan import SOLVER_PARAM

SOLVERS = ("ddim", "dpmpp-2m", "unipc")


# Settings -----------------------------------------------------------------------------------------


def test_the_solver_setting_takes_a_name_a_list_or_search():
    assert SamplingSettings(solver="dpmpp-2m").solvers("ddpm") == ("dpmpp-2m",)
    assert SamplingSettings(solver="search").solvers("flow") == DISTINCT_SOLVERS["flow"]
    listed = SamplingSettings(solver=["unipc", "ddim"])
    assert listed.solver == ("unipc", "ddim") and listed.solvers("ddpm") == ("unipc", "ddim") and listed.searches_solver
    assert not SamplingSettings(solver="ddim").searches_solver and SamplingSettings(solver="search").searches_solver
    with pytest.raises(ConfigError, match="runs on flow-matching models"):
        searched_solvers(("ddim", "flow-euler"), "ddpm")


@pytest.mark.parametrize(("value", "message"), [
    ('[]', "sampling.solver must name at least one solver"),
    ('["ddim", "ddim"]', "must not repeat a solver"),
    ('["ddim", "heun"]', "holds unknown solvers ['heun']"),
    ('["ddim", 3]', "every entry of sampling.solver must be str"),
    ('"fastest"', "sampling.solver must be one of"),
])
def test_a_wrong_solver_setting_is_one_line_naming_the_file_and_line(value, message):
    text = f'[model]\nsource = "digits"\n\n[sampling]\nsolver = {value}\n'
    with pytest.raises(ConfigError, match=r"study.toml, line 5: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        parse_study_config(text, name="study", origin="study.toml")


def test_a_solver_list_survives_the_stored_config():
    config = parse_study_config('[sampling]\nsolver = ["dpmpp-2m", "unipc"]\n', name="s", origin="s.toml")
    stored = json.loads(json.dumps(config.to_dict()))  # what the study marker keeps
    assert type(config).from_dict(stored) == config


def test_euler_is_not_among_the_searched_solvers_and_is_close_to_ddim_only_near_t():
    # Its update is DDIM's from noise scaled by sqrt(1 - alpha_bar) of the first step (tests/test_solvers.py).
    images = {}
    for first in (921, 500):
        plan = Plan((first, 631 * first // 921, 365 * first // 921, 149 * first // 921))
        for solver in ("ddim", "euler"):
            with digits_evaluator(dataclasses.replace(DIGITS_SETTINGS, solver=solver, batch_size=16)).generator as generator:
                images[solver, first] = next(generator.batches(plan, 16))
    near, far = ((images["ddim", t] - images["euler", t]).abs().max() for t in (921, 500))
    assert near < 0.05 < far
    assert "euler" not in DISTINCT_SOLVERS["ddpm"]


# The joint genome ---------------------------------------------------------------------------------


def _space(k_min=4, k_max=4) -> SolverTimestepSpace:
    return SolverTimestepSpace(TimestepSpace(num_train_timesteps=1000, k_min=k_min, k_max=k_max), SOLVERS)


def test_every_operator_returns_a_genome_of_the_space():
    space, rng = _space(3, 6), np.random.default_rng(0)
    genomes = [space.random(rng) for _ in range(20)]
    for _ in range(200):
        a, b = (genomes[int(i)] for i in rng.choice(len(genomes), 2, replace=False))
        for child in (space.mutate(a, rng, replace_prob=0.25), space.refine(a, rng), space.crossover(a, b, rng)):
            assert space.contains(child), child
            genomes.append(child)
    assert {g.solver for g in genomes} == set(SOLVERS)


def test_mutants_change_the_solver_as_one_more_gene_and_sometimes_keep_the_steps():
    space, rng = _space(), np.random.default_rng(1)
    parent = SolverSteps("ddim", (800, 600, 400, 200))
    mutants = [space.mutate(parent, rng, replace_prob=0.25) for _ in range(2000)]
    assert all(m != parent for m in mutants)
    other_solver = [m for m in mutants if m.solver != "ddim"]
    assert 0.2 < len(other_solver) / len(mutants) < 0.3
    kept_steps = [m for m in other_solver if m.timesteps == parent.timesteps]  # expected share 0.75 ** 4 = 0.32
    assert 0.25 < len(kept_steps) / len(other_solver) < 0.4
    refined = [space.refine(parent, rng) for _ in range(1000)]  # one gene: the solver 1 time in 5
    assert 0.15 < sum(r.solver != "ddim" for r in refined) / len(refined) < 0.25
    assert all((r.solver != "ddim") != (r.timesteps != parent.timesteps) for r in refined)


def test_a_crossover_takes_the_solver_of_either_parent():
    space, rng = _space(), np.random.default_rng(2)
    a, b = SolverSteps("ddim", (900, 700, 500, 300)), SolverSteps("unipc", (800, 600, 400, 200))
    solvers = [space.crossover(a, b, rng).solver for _ in range(400)]
    assert 0.4 < solvers.count("ddim") / len(solvers) < 0.6 and set(solvers) == {"ddim", "unipc"}


# The sampler and the storage ----------------------------------------------------------------------


def _fake_fid(plan: Plan) -> float:
    """Lowest for dpmpp-2m near (750, 500, 250, 50): a landscape where the solver matters."""
    penalty = {"ddim": 3.0, "dpmpp-2m": 0.0, "unipc": 1.0}[plan.solver]
    return penalty + sum(abs(t - best) for t, best in zip(plan.timesteps, (750, 500, 250, 50))) / 100


def test_the_sampler_searches_solvers_and_the_trials_carry_them(tmp_path):
    sampler = TimestepSampler(k_min=4, solvers=SOLVERS, population_size=10, num_parents=3, num_mutants=4,
                              num_crossovers=3, initial_plans=[Plan((999, 666, 333, 0)), Plan((999, 666, 333, 0), solver="unipc")],
                              seed=0)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", sampler=sampler)
    study.optimize(lambda trial: _fake_fid(plan_from_trial(trial)), n_trials=60)
    trials = study.trials
    # the first plans: an initial plan without a solver takes the first searched one
    assert [stored_plan(t).solver for t in trials[:2]] == ["ddim", "unipc"]
    plans = [stored_plan(t) for t in trials]
    assert len({(p.solver, p.timesteps) for p in plans}) == len(plans)  # never the same genome twice
    assert {p.solver for p in plans} == set(SOLVERS)
    assert trials[-1].params[SOLVER_PARAM] == plans[-1].solver and trials[-1].user_attrs["solver"] == plans[-1].solver
    assert stored_plan(study.best_trial).solver == "dpmpp-2m"
    # a second sampler on the stored study continues with the same genomes (resumed or another worker)
    again = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 's.db'}",
                              sampler=TimestepSampler(k_min=4, solvers=SOLVERS, population_size=10, num_parents=3,
                                                              num_mutants=4, num_crossovers=3, seed=1))
    assert {again.sampler._genome(t) for t in trials} == {SolverSteps(p.solver, p.timesteps) for p in plans}


def test_the_sampler_refuses_solvers_that_do_not_fit():
    with pytest.raises(ConfigError, match="runs on flow-matching models"):
        TimestepSampler(k_min=4, solvers=["ddim", "flow-euler"])
    with pytest.raises(ConfigError, match="distinct solver names"):
        TimestepSampler(k_min=4, solvers=["ddim", "ddim"])
    with pytest.raises(ConfigError, match="solver 'euler' is not searched"):
        TimestepSampler(k_min=4, solvers=SOLVERS, initial_plans=[Plan((999, 666, 333, 0), solver="euler")])


def test_stage2_keeps_the_solver_of_the_stage1_plan(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    stage1 = optuna.create_study(study_name="t", storage=storage, sampler=TimestepSampler(
        k_min=3, solvers=SOLVERS, population_size=6, num_parents=2, num_mutants=2, num_crossovers=2, seed=0))
    stage1.optimize(lambda trial: SOLVERS.index(plan_from_trial(trial).solver) + plan_from_trial(trial).timesteps[-1] / 100,
                    n_trials=12)
    evaluator = digits_evaluator(dataclasses.replace(DIGITS_SETTINGS, batch_size=8))
    blocks = evaluator.generator.switch.blocks
    evaluator.close()
    sampler = ArchitectureSampler(source_study="t", blocks=blocks, k_min=3, k_max=3, population_size=6, num_parents=2,
                                  num_mutants=2, num_crossovers=2, seed=0)
    stage2 = optuna.create_study(study_name="a", storage=storage, sampler=sampler)
    stage2.optimize(lambda trial: 1.0 + len(plan_from_trial(trial).block_names()), n_trials=24)
    solvers_of = {p.timesteps: p.solver for p in map(stored_plan, stage1.trials)}
    plans = [stored_plan(t) for t in stage2.trials]
    assert all(p.solver in SOLVERS for p in plans)
    assert all(p.solver == solvers_of[p.timesteps] for p in plans if p.timesteps in solvers_of)


# End to end ---------------------------------------------------------------------------------------


def test_a_study_that_searches_solvers_runs_both_stages_and_exports_the_solver(tmp_path):
    from optuna_diffusion.stored_studies import choose_plan, stored_stage_studies

    config = with_overrides(load_study_config("digits"), num_samples=8, batch_size=8, solver="search")
    config = dataclasses.replace(
        config,
        timesteps=dataclasses.replace(config.timesteps, k_min=3, k_max=3, n_trials=8, population_size=6,
                                      low_fidelity_fraction=0.0),
        architecture=dataclasses.replace(config.architecture, n_trials=4, population_size=4, probe_samples=0,
                                         low_fidelity_fraction=0.0),
    )
    url = f"sqlite:///{tmp_path / 's.db'}"
    studies = run_optimize(config, url, echo=lambda line: None)
    stage1 = [stored_plan(t) for t in studies["timesteps"].trials]
    # the first generation: each hand-designed schedule under each searched solver
    assert {p.solver for p in stage1[:6]} == set(DISTINCT_SOLVERS["ddpm"])
    assert all(p.solver in DISTINCT_SOLVERS["ddpm"] for p in stage1 + [stored_plan(t) for t in studies["architecture"].trials])
    chosen = choose_plan(stored_stage_studies(config, url, None), max_macs=None, steps=None, trial_number=None)
    assert chosen["plan"]["solver"] in DISTINCT_SOLVERS["ddpm"]
    assert Plan.from_dict(json.loads(json.dumps(chosen["plan"]))).solver == chosen["plan"]["solver"]


def test_evaluate_runs_an_exported_plan_with_the_solver_asked_for(tmp_path):
    from optuna_diffusion.one_off import evaluate_plan_file

    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"plan": Plan((921, 631, 365, 149), solver="ddim").to_dict()}))
    config = with_overrides(load_study_config("digits"), batch_size=16)
    _, as_exported, _ = evaluate_plan_file(config, path, baseline=None, steps=4, samples=16)
    _, asked, _ = evaluate_plan_file(config, path, baseline=None, steps=4, samples=16, solver="dpmpp-2m")
    assert (as_exported.solver, asked.solver) == ("ddim", "dpmpp-2m")
