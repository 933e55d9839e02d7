"""Search quality over a range of K: the hypervolume of each sampler's (FID, MACs) front after N evaluations.

On the digits model with K in 3..8 (500 samples per evaluation, common random numbers), each sampler
gets the same budget for several seeds and its front is scored by hypervolume against one reference
point (FID 20, 1.1x the MACs of the largest K; larger is better):

* ``timestep``: TimestepSampler over variable-K genomes (NSGA-II selection), generation 0 seeded with
  the hand-designed schedules of every K, as the digits study runs it;
* ``nsga2`` / ``tpe``: Optuna's multi-objective NSGAIISampler / TPESampler on ``num_steps`` and K
  integer parameters (sorted before use, a repeated value pushed to the next free step), given the
  same hand-designed schedules first (``enqueue_trial``).

Run: python benchmarks/search_front.py [--trials 200] [--seeds 0 1 2] [--k-min 3] [--k-max 8]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import optuna

import _harness
from _harness import hypervolume
from optuna_diffusion.baselines import strictly_decreasing
from optuna_diffusion.plan import Plan
from optuna_diffusion.population import stage_population
from optuna_diffusion.samplers import TimestepSampler, plan_from_trial

SAMPLERS = ("timestep", "nsga2", "tpe")
REFERENCE_FID = 20.0


def make_sampler(name: str, seed: int, args: argparse.Namespace, initial: list[Plan]) -> optuna.samplers.BaseSampler:
    if name == "timestep":
        return TimestepSampler(k_min=args.k_min, k_max=args.k_max, initial_plans=initial, seed=seed,
                               **stage_population("timesteps", args.population, args.k_max - args.k_min + 1))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=args.population, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def run_search(task: tuple[str, int, argparse.Namespace]) -> tuple[str, int, list[tuple[float, float]], float]:
    """One (sampler, seed) search in its own process: every (FID, MACs), and the MACs of the largest K."""
    name, seed, args = task
    _harness.quiet_process()
    evaluator = _harness.search_evaluator(model=args.model)
    num_train = evaluator.generator.schedule.num_train_timesteps
    initial = _harness.baseline_seeds(range(args.k_min, args.k_max + 1), evaluator.generator.schedule.alphas_cumprod)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        if name == "timestep":
            plan = plan_from_trial(trial)
        else:
            k = trial.suggest_int("num_steps", args.k_min, args.k_max)
            values = [trial.suggest_int(f"t{i}", 0, num_train - 1) for i in range(k)]
            plan = Plan(strictly_decreasing(values, num_train), num_train_timesteps=num_train)
        return evaluator.evaluate(plan, args.samples).fid, float(evaluator.macs(plan))

    initial = initial[: args.population]
    enqueue = [] if name == "timestep" else [
        {"num_steps": plan.num_steps, **{f"t{i}": t for i, t in enumerate(plan.timesteps)}} for plan in initial
    ]
    study = _harness.optimize(make_sampler(name, seed, args, initial), objective, args.trials,
                              directions=["minimize", "minimize"], enqueue=enqueue)
    largest = float(evaluator.macs(Plan(tuple(range(args.k_max - 1, -1, -1)), num_train_timesteps=num_train)))
    evaluator.close()
    return name, seed, [tuple(t.values) for t in study.trials if t.values is not None], largest


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    parser.add_argument("--k-min", type=int, default=3)
    parser.add_argument("--k-max", type=int, default=8)
    _harness.add_common_arguments(parser, model="digits", trials=200, samples=500, seeds=(0, 1, 2), population=20)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    _harness.add_common_arguments(parser, jobs=2)
    args = parser.parse_args()
    _harness.model_source(args.model)  # trained once, before the searches share it
    tasks = [(name, seed, args) for name in args.samplers for seed in args.seeds]
    results = _harness.map_in_processes(run_search, tasks, args.jobs)
    reference = np.array([REFERENCE_FID, 1.1 * results[0][3]])
    print(f"{args.model}, ddim, K in {args.k_min}..{args.k_max}, {args.samples} samples/eval, {args.trials} evals, "
          f"seeds {args.seeds}; hypervolume of (FID, MACs) against reference ({reference[0]:g}, {reference[1]:.4g})")
    volumes = {name: {seed: hypervolume(points, reference) for n, seed, points, _ in results if n == name}
               for name in args.samplers}
    for name, by_seed in volumes.items():
        per_seed = " ".join(f"{v:.4g}" for v in by_seed.values())
        print(f"{name:<9} median {statistics.median(by_seed.values()):.4g}   per seed {per_seed}")
    if "timestep" in volumes:
        for other in (n for n in volumes if n != "timestep"):
            wins = sum(volumes["timestep"][s] >= volumes[other][s] for s in args.seeds)
            print(f"timestep >= {other} on {wins}/{len(args.seeds)} seeds")


if __name__ == "__main__":
    _harness.timed_main(main)
