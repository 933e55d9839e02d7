"""Search quality of TimestepSampler against the samplers a user would otherwise pick.

On the digits model at K steps (500 samples per evaluation, common random numbers), each sampler
gets the same budget of evaluations for several seeds:

* ``timestep``: optuna-diffusion's TimestepSampler as a study's stage 1 runs it (first generation
  seeded with the baselines, then refinements and TPE proposals: ``population.stage_population``);
* ``random``: Optuna's RandomSampler over random sets of K time steps (sorted);
* ``nsga2`` / ``tpe`` / ``gp``: Optuna's stock NSGAIISampler / TPESampler / GPSampler on K integer
  parameters, sorted before use (a repeated value is pushed to the next free step);
* ``autodiffusion``: the paper's own evolutionary search (population 50, 10 parents, 25 mutants,
  15 crossovers, the first population seeded from uniform DDIM; ``autodiffusion_search.py``).

It prints per sampler the median best FID, the median number of evaluations needed to come within 5%
of that run's final best, and then re-scores the best plan found with all 1,797 samples against the
hand-designed schedules. Run: python benchmarks/search_quality.py [--trials 200] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics

import optuna
import torch

import _harness
from autodiffusion_search import autodiffusion_search
from optuna_diffusion.baselines import baseline_plans, strictly_decreasing
from optuna_diffusion.evaluation import PlanEvaluator
from optuna_diffusion.plan import Plan
from optuna_diffusion.population import stage_population
from optuna_diffusion.samplers import TimestepSampler, plan_from_trial, suggest_plan

SAMPLERS = ("timestep", "random", "nsga2", "tpe", "gp", "autodiffusion")


def make_objective(name: str, evaluator: PlanEvaluator, k: int, num_samples: int):
    num_train = evaluator.generator.schedule.num_train_timesteps

    def plan_of(trial: optuna.Trial) -> Plan:
        if name == "timestep":
            return plan_from_trial(trial)
        if name == "random":
            return suggest_plan(trial, k_min=k, num_train_timesteps=num_train)
        values = [trial.suggest_int(f"t{i}", 0, num_train - 1) for i in range(k)]
        return Plan(strictly_decreasing(values, num_train), num_train_timesteps=num_train)

    def objective(trial: optuna.Trial) -> float:
        plan = plan_of(trial)
        trial.set_user_attr("timesteps", list(plan.timesteps))
        return evaluator.evaluate(plan, num_samples).fid

    return objective


def make_sampler(name: str, seed: int, k: int, initial_plans: list[Plan], population: int) -> optuna.samplers.BaseSampler:
    if name == "timestep":
        return TimestepSampler(k_min=k, initial_plans=initial_plans, seed=seed, **stage_population("timesteps", population))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def evaluations_to_within(values: list[float], fraction: float) -> int:
    """1-based index of the first evaluation within ``fraction`` of the run's final best."""
    best = min(values)
    return next(i + 1 for i, v in enumerate(values) if v <= best * (1 + fraction))


def run_search(task: tuple[str, int, argparse.Namespace]) -> tuple[str, int, list[float], list[int]]:
    """One (sampler, seed) search in its own process: FID per evaluation, best time steps."""
    name, seed, args = task
    _harness.quiet_process(args.threads)
    evaluator = _harness.search_evaluator(solver=args.solver, model=args.model, seed=args.sampling_seed)
    if name == "autodiffusion":
        num_train = evaluator.generator.schedule.num_train_timesteps
        fid_of = lambda steps: evaluator.evaluate(Plan(steps, num_train_timesteps=num_train), args.samples).fid  # noqa: E731
        history = autodiffusion_search(fid_of, args.steps, num_train, args.trials, seed)
        evaluator.close()
        return name, seed, [fid for _, fid in history], list(min(history, key=lambda item: item[1])[0])
    initial_plans = _harness.baseline_seeds([args.steps], evaluator.generator.schedule.alphas_cumprod)
    sampler = make_sampler(name, seed, args.steps, initial_plans, args.population)
    study = _harness.optimize(sampler, make_objective(name, evaluator, args.steps, args.samples), args.trials)
    evaluator.close()
    values = [t.value for t in study.trials if t.value is not None]
    return name, seed, values, study.best_trial.user_attrs["timesteps"]


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    _harness.add_common_arguments(parser, model="digits", steps=4, trials=200, samples=500, seeds=(0, 1, 2), population=20)
    parser.add_argument("--solver", default="ddim")
    parser.add_argument("--sampling-seed", type=int, default=0, help="seed of the common random numbers (noise and labels)")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    _harness.add_common_arguments(parser, jobs=2, threads=1)
    args = parser.parse_args()
    _harness.model_source(args.model)  # trained once, before the searches share it
    print(f"{args.model}, {args.solver}, K={args.steps}, {args.samples} samples/eval, {args.trials} evals, "
          f"seeds {args.seeds}, TimestepSampler population {args.population}")
    tasks = [(name, seed, args) for name in args.samplers for seed in args.seeds]
    results = _harness.map_in_processes(run_search, tasks, args.jobs)
    width = max(9, *(len(name) for name in args.samplers))
    print(f"{'sampler':<{width}} {'median best FID':>15} {'per seed':>26} {'median evals to 5%':>19}")
    best_plan, best_fid = None, float("inf")
    for name in args.samplers:
        runs = [r for r in results if r[0] == name]
        bests = [min(values) for _, _, values, _ in runs]
        reach = [evaluations_to_within(values, 0.05) for _, _, values, _ in runs]
        per_seed = " ".join(f"{b:.2f}" for b in bests)
        print(f"{name:<{width}} {statistics.median(bests):15.2f} {per_seed:>26} {statistics.median(reach):19.0f}")
        for _, _, values, timesteps in runs:
            if name == "timestep" and min(values) < best_fid:
                best_fid, best_plan = min(values), Plan(timesteps)
    medians = {n: statistics.median(min(r[2]) for r in results if r[0] == n) for n in args.samplers}
    if "timestep" in medians:
        for other in (n for n in medians if n != "timestep"):
            print(f"timestep / {other}: {medians['timestep'] / medians[other]:.3f}")
    if best_plan is not None:
        torch.set_num_threads(args.threads * args.jobs)
        evaluator = _harness.search_evaluator(solver=args.solver, prefix_cache=False, model=args.model)
        baselines = baseline_plans(args.steps, evaluator.generator.schedule.alphas_cumprod)
        full = _harness.ALL_DIGITS
        rescored = evaluator.evaluate(best_plan, full).fid
        baseline_fids = {n: evaluator.evaluate(p, full).fid for n, p in baselines.items()}
        best_hand = min(baseline_fids, key=baseline_fids.get)
        print(f"best searched plan {list(best_plan.timesteps)}: FID {rescored:.2f} with {full} samples")
        for n, fid in baseline_fids.items():
            print(f"  {n:<10} {list(baselines[n].timesteps)}: FID {fid:.2f}")
        print(f"ratio to uniform: {rescored / baseline_fids['uniform']:.3f}; to best hand-designed ({best_hand}): "
              f"{rescored / baseline_fids[best_hand]:.3f}")
        evaluator.close()


if __name__ == "__main__":
    _harness.timed_main(main)
