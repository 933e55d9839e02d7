"""Stage 2's probes of single changes: what they measure, how they steer the operators, how they are stored."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from optuna_diffusion.blocks import Block, check_plan_blocks
from optuna_diffusion.plan import Plan
from optuna_diffusion.runner import run_optimize
from optuna_diffusion.samplers._architecture_mutation import mutate_plan
from optuna_diffusion.samplers._architecture_space import ArchitectureSpace
from optuna_diffusion.samplers._timestep_space import TimestepSpace
from optuna_diffusion.sensitivity import TOLERANCE, Probe, Sensitivity, anchor_plan, probe_sensitivity, single_changes
from optuna_diffusion.study_config import load_study_config, with_overrides
from optuna_diffusion.trial_plan import SENSITIVITY_ATTR, stored_plan

BLOCKS = tuple(Block(name, "resnet", (name,)) for name in ("a", "b", "c"))
ANCHOR = Plan((900, 600, 300, 100))


def sensitivity(values: dict[tuple[int, str, str], float], base: float = 1.0) -> Sensitivity:
    """Probes of ANCHOR: every single change scores ``base`` unless ``values`` says otherwise; each saves 10 MACs."""
    probes = tuple(
        Probe(step, block, action, values.get((step, block, action), base), 10)
        for step, block, action in single_changes(ANCHOR, BLOCKS)
    )
    return Sensitivity(ANCHOR, base, 100, 8, probes)


def test_a_change_is_proposed_less_the_more_it_harms():
    table = sensitivity({(0, "a", "skip"): 1.05, (1, "a", "skip"): 2.0, (3, "b", "reuse"): math.inf})
    assert table.acceptance(0, 4, "a", "skip") == 1.0  # within the tolerance
    assert table.acceptance(1, 4, "a", "skip") == pytest.approx(TOLERANCE**2)  # twice the value
    assert table.acceptance(3, 4, "b", "reuse") == 0.0
    # another number of steps reads the anchor's step at the same relative position
    assert table.acceptance(7, 8, "b", "reuse") == 0.0 and table.acceptance(2, 8, "a", "skip") == pytest.approx(TOLERANCE**2)
    assert table.acceptance(1, 8, "a", "reuse") == 1.0  # reuse maps past the first step, where none was probed


def test_mutants_never_propose_a_change_measured_to_fail_and_still_differ_from_their_parent():
    failing = {(step, block, "skip"): math.inf for step in (0, 3) for block in ("a", "b", "c")}
    space = ArchitectureSpace(
        blocks=BLOCKS,
        timestep_space=TimestepSpace(num_train_timesteps=1000, k_min=4, k_max=4),
        sensitivity=sensitivity(failing),
    )
    rng = np.random.default_rng(0)
    plan, seen = ANCHOR, set()
    for _ in range(300):
        child = mutate_plan(space, plan, rng, toggle_prob=0.3, max_ratio=0.5)
        assert child != plan
        check_plan_blocks(child, BLOCKS)
        assert not child.skips[0] and not child.skips[3], child
        seen |= {(i, name) for i, skipped in enumerate(child.skips) for name in skipped}
        plan = child
    assert {step for step, _ in seen} == {1, 2}  # the harmless skips are still explored


class AdditiveEvaluator:
    """A stand-in evaluator: each change adds its delta to the value 1.0, plus ``clash`` when both of
    ``pair`` are made (single changes do not add up); each change saves 10 of 100 MACs unless ``savings``
    says otherwise."""

    def __init__(self, deltas: dict[tuple[int, str, str], float], pair=(), clash: float = 0.0, savings=None):
        self.deltas, self.pair, self.clash, self.savings = deltas, set(pair), clash, savings or {}
        self.generator = SimpleNamespace(switch=SimpleNamespace(blocks=BLOCKS))
        self.evaluated: list[Plan] = []
        self.sample_counts: set[int] = set()

    @staticmethod
    def changes(plan: Plan) -> set[tuple[int, str, str]]:
        return {(i, name, action) for i, (skipped, reused) in enumerate(zip(plan.skips, plan.reuses))
                for action, names in (("skip", skipped), ("reuse", reused)) for name in names}

    def macs(self, plan: Plan) -> int:
        return 100 - sum(self.savings.get(change, 10) for change in self.changes(plan))

    def evaluate(self, plan: Plan, num_samples: int):
        self.evaluated.append(plan)
        self.sample_counts.add(num_samples)
        made = self.changes(plan)
        value = 1.0 + sum(self.deltas.get(c, 5.0) for c in made) + (self.clash if self.pair and self.pair <= made else 0.0)
        return SimpleNamespace(fid=value, macs=self.macs(plan), ok=True)


def test_stacks_follow_the_cheapest_combination_per_mac_saved_and_stop_where_it_costs_too_much():
    cheap = {(1, "b", "skip"): 0.0, (1, "b", "reuse"): 0.01, (2, "c", "reuse"): 0.02, (3, "a", "reuse"): 0.03}
    evaluator = AdditiveEvaluator(cheap, pair=[(1, "b", "skip"), (2, "c", "reuse")], clash=1.0)
    table = probe_sensitivity(evaluator, ANCHOR, 8, cuts=(0.1, 0.2, 0.3))
    assert len(table.probes) == len(single_changes(ANCHOR, BLOCKS)) and table.base_value == 1.0
    # Nothing helps alone; the changes of +5 are no candidates. Round 1: skip b@1 (+0, 0.1 saved).
    # Round 2: reuse b@1 cannot join it; reuse c@2 clashes with it (+1.02 together) so reuse a@3
    # (+0.03, 0.2 saved). Round 3: only reuse c@2 is left, +1.05 in all: beyond the candidates' harm,
    # so the path stops and 0.3 is never reached.
    assert [evaluator.macs(plan) for plan in table.stacks] == [90, 80]
    assert AdditiveEvaluator.changes(table.stacks[-1]) == {(1, "b", "skip"), (3, "a", "reuse")}
    assert Sensitivity.from_dict(table.to_dict()) == table

    # Helpful changes come first (a negative increase per MAC), and the path's lowest plan is a stack.
    helped = AdditiveEvaluator({(3, "a", "reuse"): -0.1, (2, "a", "skip"): -0.05, (3, "a", "skip"): -0.2,
                                (1, "c", "reuse"): 0.04, (1, "b", "reuse"): 0.04})
    stacks = probe_sensitivity(helped, ANCHOR, 8, cuts=(0.4,)).stacks
    assert AdditiveEvaluator.changes(stacks[0]) == {(3, "a", "skip"), (2, "a", "skip")}  # most helpful first, valid
    assert AdditiveEvaluator.changes(stacks[-1]) == {(3, "a", "skip"), (2, "a", "skip"), (1, "c", "reuse"), (1, "b", "reuse")}


def test_stacks_are_polished_with_the_stage_samples_by_dropping_changes_while_the_cut_holds():
    x, y = (1, "a", "skip"), (2, "b", "skip")  # y saves twice as much as x, for three times the harm
    evaluator = AdditiveEvaluator({x: 0.01, y: 0.03}, savings={y: 20})
    stacks = probe_sensitivity(evaluator, ANCHOR, 8, cuts=(0.2,), polish_samples=32).stacks
    # The path takes x (0.001 per MAC), then y (0.0015): 30% saved at +0.04. Dropping x keeps 20%
    # saved at +0.03, so the stack is y alone; dropping y would save too little.
    assert [AdditiveEvaluator.changes(plan) for plan in stacks] == [{y}]
    assert evaluator.sample_counts == {8, 32}


def _config(probe_samples: int):
    config = with_overrides(load_study_config("digits"), num_samples=8, batch_size=8)
    stages = {
        "timesteps": dataclasses.replace(config.timesteps, k_min=2, k_max=2, n_trials=3, population_size=2),
        "architecture": dataclasses.replace(config.architecture, n_trials=5, population_size=5, probe_samples=probe_samples),
    }
    return dataclasses.replace(config, **stages)


def test_stage2_probes_the_anchor_once_stores_the_probes_and_seeds_its_first_generation(tmp_path):
    url = f"sqlite:///{tmp_path / 'probes.db'}"
    config = _config(probe_samples=4)
    lines: list[str] = []
    studies = run_optimize(config, url, echo=lines.append)
    stage1, stage2 = studies["timesteps"], studies["architecture"]
    stored = Sensitivity.from_dict(stage2.user_attrs[SENSITIVITY_ATTR])
    assert stored.anchor == anchor_plan(stage1, stored_plan) and stored.num_samples == 4
    assert len(stored.probes) == len(single_changes(stored.anchor, digits_blocks())) and sum("probing" in line for line in lines) == 1
    assert all(math.isfinite(p.value) and p.macs_saved > 0 for p in stored.probes)
    # the first plans stage 2 evaluates include a stack of the probes (the anchor's time steps, blocks given up)
    plans = [stored_plan(t) for t in stage2.trials]
    assert any(plan.timesteps == stored.anchor.timesteps and (any(plan.skips) or any(plan.reuses)) for plan in plans)

    # Resumed with a larger budget: the stored probes are read, not measured again.
    lines.clear()
    more = dataclasses.replace(config, architecture=dataclasses.replace(config.architecture, n_trials=6))
    resumed = run_optimize(more, url, stages=("architecture",), echo=lines.append)["architecture"]
    assert not any("probing" in line for line in lines)
    assert resumed.user_attrs[SENSITIVITY_ATTR] == stored.to_dict()
    assert len([t for t in resumed.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 6


def digits_blocks():
    from optuna_diffusion.study import build_evaluator

    evaluator = build_evaluator(_config(0))
    try:
        return evaluator.generator.switch.blocks
    finally:
        evaluator.close()


def test_probe_samples_of_one_is_refused():
    from optuna_diffusion.settings import SettingError

    config = load_study_config("digits")
    with pytest.raises(SettingError, match="probe_samples"):
        dataclasses.replace(config.architecture, probe_samples=1)


@pytest.mark.parametrize(
    "values, steps",
    [
        ({3: 5.8, 4: 3.1, 6: 2.9}, 3),  # FID: 3 steps is within 2x of the best
        ({3: 6.0, 4: 3.1, 6: 2.9}, 4),
        ({3: -26.8, 4: -30.1, 6: -31.7}, 4),  # -PSNR: 3 steps is 4.9 dB (3x the squared error) worse
    ],
)
def test_the_anchor_is_the_fewest_steps_near_the_best_value(values, steps):
    study = optuna.create_study(directions=["minimize", "minimize"])
    for k, value in values.items():
        plan = Plan(tuple(range(900, 0, -900 // k))[:k])
        study.add_trial(optuna.trial.create_trial(values=[value, k], user_attrs={"timesteps": list(plan.timesteps)}))
    assert anchor_plan(study, lambda t: Plan(t.user_attrs["timesteps"])).num_steps == steps
