"""How good can a K-step plan get? An upper bound on the best FID any sampler can reach.

The search-quality objective is deterministic (common random numbers, fixed reference statistics), so
one number is the best FID over all K-step plans. This script bounds it from above: for each sampler
it runs a search of ``--trials`` evaluations (its first 200 are exactly ``search_quality.py``'s search
with that seed) and then a compass search from the best plan found: move one time step by
64, 32, ..., 1 (keeping the plan strictly decreasing), accept any improvement, halve the move when none
improves, until no single-step move of any size helps. Run:
python benchmarks/search_ceiling.py [--trials 1000] [--samplers tpe timestep] [--seed 0]
"""

from __future__ import annotations

import argparse

import _harness
from optuna_diffusion.baselines import baseline_plans
from optuna_diffusion.plan import Plan
from search_quality import make_objective, make_sampler  # the same searches, exactly

POPULATION = 20  # search_quality.py's default
MOVES = (64, 32, 16, 8, 4, 2, 1)
REPORT_AT = (200, 400, 600, 800, 1000)


def compass_search(start: tuple[int, ...], evaluate, num_train_timesteps: int) -> tuple[int, ...]:
    """Best plan reachable from ``start`` by improving one-step moves of shrinking size."""
    best = start
    for move in MOVES:
        improved = True
        while improved:
            improved = False
            for i in range(len(best)):
                for direction in (1, -1):
                    candidate = list(best)
                    candidate[i] += direction * move
                    if not all(a > b for a, b in zip(candidate, candidate[1:])) or not 0 <= candidate[-1] <= candidate[0] < num_train_timesteps:
                        continue
                    if evaluate(tuple(candidate)) < evaluate(best):
                        best, improved = tuple(candidate), True
    return best


def run(task: tuple[str, argparse.Namespace]) -> tuple[str, dict[int, float], tuple[int, ...], float, tuple[int, ...], float, int]:
    name, args = task
    _harness.quiet_process()
    evaluator = _harness.search_evaluator(model=args.model)
    fids: dict[tuple[int, ...], float] = {}

    def evaluate(timesteps: tuple[int, ...]) -> float:
        if timesteps not in fids:
            fids[timesteps] = evaluator.evaluate(Plan(timesteps), args.samples).fid
        return fids[timesteps]

    initial = list(baseline_plans(args.steps, evaluator.generator.schedule.alphas_cumprod).values())
    sampler = make_sampler(name, args.seed, args.steps, initial, POPULATION)
    study = _harness.optimize(sampler, make_objective(name, evaluator, args.steps, args.samples), args.trials)
    visited = [tuple(trial.user_attrs["timesteps"]) for trial in study.trials]
    fids.update((steps, trial.value) for steps, trial in zip(visited, study.trials))
    best_after = {n: min(fids[t] for t in visited[:n]) for n in REPORT_AT if n <= len(visited)}
    searched_best = min(visited, key=fids.get)
    evaluations_before = len(fids)
    polished = compass_search(searched_best, evaluate, evaluator.generator.schedule.num_train_timesteps)
    evaluator.close()
    return name, best_after, searched_best, fids[searched_best], polished, fids[polished], len(fids) - evaluations_before


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    _harness.add_common_arguments(parser, model="digits", steps=4, trials=1000, samples=500, seed=0)
    parser.add_argument("--samplers", nargs="+", default=["tpe", "timestep"], choices=["tpe", "timestep"])
    args = parser.parse_args()
    _harness.model_source(args.model)  # trained once, before the searches share it
    print(f"{args.model}, ddim, K={args.steps}, {args.samples} samples/eval, seed {args.seed}: "
          f"{args.trials}-evaluation search, then compass search from its best")
    results = _harness.map_in_processes(run, [(name, args) for name in args.samplers], len(args.samplers))
    for name, best_after, searched, searched_fid, polished, polished_fid, extra in results:
        trace = ", ".join(f"{fid:.3f} after {n}" for n, fid in best_after.items())
        print(f"{name:<9} best {trace}")
        print(f"{'':<9} searched best {list(searched)} FID {searched_fid:.3f}; compass search "
              f"({extra} more evaluations) -> {list(polished)} FID {polished_fid:.3f}")
    print(f"best FID found by any: {min(r[5] for r in results):.3f}")


if __name__ == "__main__":
    _harness.timed_main(main)
