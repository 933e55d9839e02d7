"""A schedule is solver-specific: search the time steps for each solver, then cross-evaluate; and search both at once.

For each solver (DDIM, DPM-Solver++(2M), UniPC: the distinct deterministic solvers, Euler being DDIM)
and K in (4, 6), TimestepSampler searches the digits model's time steps as a study's stage 1 does
(``population.stage_population``: GP refinements and TPE proposals; 500 samples per evaluation, common
random numbers). Every best plan is then re-scored with all 1,797 samples under every solver, so the
table shows the best plan per solver, the overall best (against the FID of 100 uniform DDIM steps),
and what a plan tuned for one solver is worth under another. With ``--joint N ...`` one
TimestepSampler per N also searches the solver with the time steps (``[sampling] solver = "search"``),
N evaluations in all, and its best plan is set against the best single-solver search.
Run: python benchmarks/per_solver.py [--trials 200] [--jobs 2] [--steps 2 3 4] [--joint 200 600]
"""

from __future__ import annotations

import argparse
import dataclasses

import _harness
from optuna_diffusion.baselines import baseline_plans
from optuna_diffusion.objective import PlanObjective
from optuna_diffusion.plan import Plan
from optuna_diffusion.population import stage_population
from optuna_diffusion.samplers import TimestepSampler, plan_from_trial
from optuna_diffusion.solvers import DISTINCT_SOLVERS

SOLVERS = DISTINCT_SOLVERS["ddpm"]
JOINT = "joint"
FULL_SAMPLES = _harness.ALL_DIGITS
REFERENCE_STEPS = 100  # what the few-step plans are compared with


def search(task: tuple[str, int, int, argparse.Namespace]) -> tuple[str, int, int, Plan]:
    """Best plan for one (solver, K) with ``trials`` evaluations, found with TimestepSampler; the solver
    too when ``solver`` is :data:`JOINT` (the baselines under every solver seed the first generation)."""
    solver, k, trials, args = task
    _harness.quiet_process()
    evaluator = _harness.search_evaluator(solver=SOLVERS if solver == JOINT else solver)
    baselines = _harness.baseline_seeds([k], evaluator.generator.schedule.alphas_cumprod)
    if solver == JOINT:
        baselines = [dataclasses.replace(plan, solver=name) for plan in baselines for name in SOLVERS]
    population = args.population
    sampler = TimestepSampler(
        k_min=k, seed=args.seed, solvers=SOLVERS if solver == JOINT else None, initial_plans=baselines[:population],
        **stage_population("timesteps", population),
    )
    study = _harness.optimize(sampler, PlanObjective(evaluator, num_samples=args.samples, objectives=("fid",)), trials)
    evaluator.close()
    best = plan_from_trial(study.best_trial)
    return solver, k, trials, dataclasses.replace(best, solver=best.solver or solver)


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    _harness.add_common_arguments(parser, trials=200, samples=500, population=20, seed=0)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 6])
    _harness.add_common_arguments(parser, jobs=2)
    parser.add_argument("--full-samples", type=int, default=FULL_SAMPLES, help="samples of the re-scoring")
    parser.add_argument("--joint", type=int, nargs="*", default=[], help="evaluations of joint solver searches")
    args = parser.parse_args()
    tasks = [(solver, k, args.trials, args) for k in args.steps for solver in SOLVERS]
    tasks += [(JOINT, k, trials, args) for k in args.steps for trials in args.joint]
    found = _harness.map_in_processes(search, tasks, args.jobs)
    evaluators = {s: _harness.search_evaluator(solver=s, prefix_cache=False) for s in SOLVERS}
    uniform = baseline_plans(REFERENCE_STEPS, evaluators["ddim"].generator.schedule.alphas_cumprod)["uniform"]
    reference = evaluators["ddim"].evaluate(uniform, args.full_samples).fid
    print(f"reference: DDIM, {REFERENCE_STEPS} uniform steps, FID {reference:.3f} ({args.full_samples} samples)")
    print(f"FID with {args.full_samples} samples of each searched plan (rows) under each solver (columns); "
          f"search: {args.trials} evaluations of {args.samples} samples, seed {args.seed}")
    for k in args.steps:
        print(f"\nK = {k}   {'tuned for':<10} {'time steps':<32} " + " ".join(f"{s:>9}" for s in SOLVERS))
        best = (float("inf"), "", "")
        for solver, steps_k, _, plan in found:
            if steps_k != k or solver == JOINT:
                continue
            timesteps = list(plan.timesteps)
            fids = {s: evaluators[s].evaluate(Plan(timesteps), args.full_samples).fid for s in SOLVERS}
            print(f"          {solver:<10} {str(timesteps):<32} " + " ".join(f"{fids[s]:9.3f}" for s in SOLVERS))
            if fids[solver] < best[0]:
                best = (fids[solver], solver, str(timesteps))
        print(f"          overall best at K = {k}: {best[1]} with {best[2]}, FID {best[0]:.3f} "
              f"({best[0] / reference:.2f}x the {REFERENCE_STEPS}-step FID)")
        for solver, steps_k, trials, plan in found:
            if steps_k == k and solver == JOINT:
                fid = evaluators[plan.solver].evaluate(plan, args.full_samples).fid
                print(f"          joint search, {trials} evaluations ({trials / args.trials:g}x one solver's): "
                      f"{plan.solver} with {list(plan.timesteps)}, FID {fid:.3f} = {fid / best[0]:.3f}x the best "
                      f"single-solver search ({len(SOLVERS) * args.trials} evaluations over {len(SOLVERS)} searches)")
    for evaluator in evaluators.values():
        evaluator.close()


if __name__ == "__main__":
    _harness.timed_main(main)
