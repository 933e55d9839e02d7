"""The numbers that frame the search: FID of hand-designed schedules on the digits models.

UNet (``digits``, DDPM): each baseline (uniform, quadratic, Karras rho=7, uniform log-SNR) at K = 4, 6,
10 steps, under DDIM and DPM-Solver++(2M), plus 100-step DDIM. DiT (``digits-dit``, rectified flow): each
flow baseline (uniform in sigma, shifted with shift 3 as SD3, and the model's own scheduler config)
under flow Euler and flow DPM-Solver++(2M), plus 100-step flow Euler. All samples of a model use the
same seeded noise and labels.
``digits-cosine-v`` is the second digits model (cosine betas, v-prediction), trained on first use.
Run: python benchmarks/baselines.py [--samples 1797] [--models digits digits-dit digits-cosine-v]
"""

from __future__ import annotations

import dataclasses

import _harness
from optuna_diffusion.baselines import baseline_names, baseline_plan
from optuna_diffusion.evaluation import DIGITS_DIT_SETTINGS, DIGITS_SETTINGS, digits_evaluator

MODELS = {
    "digits": (DIGITS_SETTINGS, ("ddim", "dpmpp-2m")),
    "digits-dit": (DIGITS_DIT_SETTINGS, ("flow-euler", "flow-dpmpp-2m")),
    "digits-cosine-v": (DIGITS_SETTINGS, ("ddim", "dpmpp-2m")),  # the second model (_harness.SECOND_MODEL_TRAINING)
}


def table(model: str, steps: list[int], num_samples: int) -> None:
    """Print the baseline table of ``model``: one row per solver and K, one column per baseline."""
    settings, solvers = MODELS[model]
    print(f"FID of baseline schedules, {model} model, {num_samples} samples vs 1797 real digits")
    fid_100 = None
    for solver in solvers:
        source = model if model == "digits-dit" else _harness.model_source(model)
        evaluator = digits_evaluator(dataclasses.replace(settings, solver=solver), model=source)
        schedule = evaluator.generator.schedule
        names = baseline_names(schedule)
        if solver == solvers[0]:
            print(f"{'solver':<14} {'K':>3} " + " ".join(f"{name:>10}" for name in names))
        for k in steps:
            fids = [evaluator.evaluate(baseline_plan(name, k, schedule), num_samples).fid for name in names]
            print(f"{solver:<14} {k:>3} " + " ".join(f"{fid:10.2f}" for fid in fids), flush=True)
        if solver == solvers[0]:
            fid_100 = evaluator.evaluate(baseline_plan("uniform", 100, schedule), num_samples).fid
        evaluator.close()
    print(f"{solvers[0]} uniform, 100 steps: {fid_100:.2f}")


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    parser.add_argument("--samples", type=int, default=_harness.ALL_DIGITS)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 6, 10])
    parser.add_argument("--models", nargs="+", default=["digits", "digits-dit"], choices=list(MODELS))
    args = parser.parse_args()
    for index, model in enumerate(args.models):
        if index:
            print()
        table(model, args.steps, args.samples)


if __name__ == "__main__":
    _harness.timed_main(main)
