"""A schedule is solver-specific: search the time steps for each solver, then cross-evaluate.

For each solver (DDIM, DPM-Solver++(2M), Euler) and K in (4, 6), TimestepSampler searches the digits
model's time steps (500 samples per evaluation, common random numbers). Every best plan is then
re-scored with all 1,797 samples under every solver, so the table shows the best plan per solver,
the overall best (against the FID of 100 uniform DDIM steps), and what a plan tuned for one solver is
worth under another. Run: python benchmarks/per_solver.py [--trials 200] [--jobs 2] [--steps 2 3 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import time

import optuna
import torch

from optuna_diffusion.baselines import baseline_plans
from optuna_diffusion.evaluation import DIGITS_SETTINGS, digits_evaluator
from optuna_diffusion.objective import PlanObjective
from optuna_diffusion.plan import Plan
from optuna_diffusion.samplers import TimestepSampler, plan_from_trial

PREFIX_CACHE_BYTES = 512 * 2**20  # shared trajectory prefixes: faster, same FIDs bit for bit

SOLVERS = ("ddim", "dpmpp-2m", "euler")
FULL_SAMPLES = 1797
REFERENCE_STEPS = 100  # what the few-step plans are compared with


def search(task: tuple[str, int, argparse.Namespace]) -> tuple[str, int, list[int]]:
    """Best time steps for one (solver, K), found with TimestepSampler."""
    solver, k, args = task
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evaluator = digits_evaluator(dataclasses.replace(DIGITS_SETTINGS, solver=solver, batch_size=500), prefix_cache=PREFIX_CACHE_BYTES)
    population = args.population
    sampler = TimestepSampler(
        k_min=k, population_size=population, num_parents=max(2, population // 5), num_mutants=population // 2,
        num_crossovers=population * 3 // 10, seed=args.seed,
        initial_plans=list(dict.fromkeys(baseline_plans(k, evaluator.generator.schedule.alphas_cumprod).values())),
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(PlanObjective(evaluator, num_samples=args.samples, objectives=("fid",)), n_trials=args.trials)
    evaluator.close()
    return solver, k, list(plan_from_trial(study.best_trial).timesteps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 6])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--full-samples", type=int, default=FULL_SAMPLES, help="samples of the re-scoring")
    args = parser.parse_args()
    started = time.perf_counter()
    tasks = [(solver, k, args) for k in args.steps for solver in SOLVERS]
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        found = pool.map(search, tasks, chunksize=1)
    evaluators = {s: digits_evaluator(dataclasses.replace(DIGITS_SETTINGS, solver=s, batch_size=500)) for s in SOLVERS}
    uniform = baseline_plans(REFERENCE_STEPS, evaluators["ddim"].generator.schedule.alphas_cumprod)["uniform"]
    reference = evaluators["ddim"].evaluate(uniform, args.full_samples).fid
    print(f"reference: DDIM, {REFERENCE_STEPS} uniform steps, FID {reference:.3f} ({args.full_samples} samples)")
    print(f"FID with {args.full_samples} samples of each searched plan (rows) under each solver (columns); "
          f"search: {args.trials} evaluations of {args.samples} samples, seed {args.seed}")
    for k in args.steps:
        print(f"\nK = {k}   {'tuned for':<10} {'time steps':<32} " + " ".join(f"{s:>9}" for s in SOLVERS))
        best = (float("inf"), "", "")
        for solver, steps_k, timesteps in found:
            if steps_k != k:
                continue
            fids = {s: evaluators[s].evaluate(Plan(timesteps), args.full_samples).fid for s in SOLVERS}
            print(f"          {solver:<10} {str(timesteps):<32} " + " ".join(f"{fids[s]:9.3f}" for s in SOLVERS))
            if fids[solver] < best[0]:
                best = (fids[solver], solver, str(timesteps))
        print(f"          overall best at K = {k}: {best[1]} with {best[2]}, FID {best[0]:.3f} "
              f"({best[0] / reference:.2f}x the {REFERENCE_STEPS}-step FID)")
    for evaluator in evaluators.values():
        evaluator.close()
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
