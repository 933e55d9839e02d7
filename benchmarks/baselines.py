"""The numbers that frame the search: FID of hand-designed schedules on the digits model.

Each baseline (uniform, quadratic, Karras rho=7, uniform log-SNR) at K = 4, 6, 10 steps, under
DDIM and DPM-Solver++(2M), plus 100-step DDIM; all samples use the same seeded noise and labels.
Run: python benchmarks/baselines.py [--samples 1797]
"""

from __future__ import annotations

import argparse
import dataclasses

from optuna_diffusion.baselines import BASELINES, baseline_plan
from optuna_diffusion.evaluation import DIGITS_SETTINGS, digits_evaluator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1797)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 6, 10])
    args = parser.parse_args()
    print(f"FID of baseline schedules, digits model, {args.samples} samples vs 1797 real digits")
    header = f"{'solver':<9} {'K':>3} " + " ".join(f"{name:>10}" for name in BASELINES)
    print(header)
    for solver in ("ddim", "dpmpp-2m"):
        evaluator = digits_evaluator(dataclasses.replace(DIGITS_SETTINGS, solver=solver))
        alphas_cumprod = evaluator.generator.schedule.alphas_cumprod
        for k in args.steps:
            fids = [evaluator.evaluate(baseline_plan(name, k, alphas_cumprod), args.samples).fid for name in BASELINES]
            print(f"{solver:<9} {k:>3} " + " ".join(f"{fid:10.2f}" for fid in fids))
        if solver == "ddim":
            fid_100 = evaluator.evaluate(baseline_plan("uniform", 100, alphas_cumprod), args.samples).fid
        evaluator.close()
    print(f"ddim uniform, 100 steps: {fid_100:.2f}")


if __name__ == "__main__":
    main()
