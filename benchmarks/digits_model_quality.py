"""Quality of the bundled digits models: FID of 100-step DDIM and 1000-step ancestral DDPM on the UNet,
100-step flow Euler on the DiT (``digits-dit``).

FID is measured in the bundled digits feature space against all 1,797 real digits.
Run: python benchmarks/digits_model_quality.py [--samples 1797] [--models digits digits-dit]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from optuna_diffusion.evaluation import DIGITS_DIT_SETTINGS, DIGITS_SETTINGS, digits_evaluator
from optuna_diffusion.fid import fid_of_images, load_feature_extractor, reference_stats
from optuna_diffusion.plan import Plan
from optuna_diffusion.baselines import baseline_plan
from optuna_diffusion.zoo.data import load_digits_images
from optuna_diffusion.zoo.training import feature_net_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1797, help="samples of 100-step DDIM")
    parser.add_argument("--ddpm-samples", type=int, default=1000, help="samples of 1000-step DDPM (slow)")
    parser.add_argument("--models", nargs="+", default=["digits", "digits-dit"], choices=["digits", "digits-dit"])
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    extractor = load_feature_extractor("digits")
    accuracy = feature_net_accuracy(extractor)
    # Context for the model's FIDs: two random halves of the real digits, one against the other.
    images, _ = load_digits_images()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    halves_fid = fid_of_images(images[order[899:]], reference_stats(images[order[:899]], extractor), extractor)
    runs = []
    if "digits" in args.models:
        runs += [
            ("digits", "DDIM, 100 steps", DIGITS_SETTINGS, lambda schedule: baseline_plan("uniform", 100, schedule), args.samples),
            ("digits", "DDPM ancestral, 1000 steps", dataclasses.replace(DIGITS_SETTINGS, solver="ddpm"),
             lambda schedule: Plan(range(999, -1, -1)), args.ddpm_samples),
        ]
    if "digits-dit" in args.models:
        runs.append(("digits-dit", "flow Euler, 100 steps", DIGITS_DIT_SETTINGS,
                     lambda schedule: baseline_plan("uniform", 100, schedule), args.samples))
    for model, label, settings, plan_of, num_samples in runs:
        evaluator = digits_evaluator(settings, model=model)
        plan = plan_of(evaluator.generator.schedule)
        result = evaluator.evaluate(plan, num_samples)
        evaluator.close()
        rows.append((model, label, result.fid, num_samples, result.seconds))
        print(f"{model} {label}: FID {result.fid:.2f} ({num_samples} samples, {result.seconds:.0f}s)", flush=True)
    print(f"feature net held-out accuracy: {accuracy:.4f} ({len(images)} digits, fixed split)")
    print(f"FID of 898 real digits against the other 899: {halves_fid:.2f}")
    print(f"{'model':<11} {'sampler':<28} {'FID':>7} {'samples':>8} {'seconds':>8}   (vs all 1797 real digits)")
    for model, label, fid, num_samples, seconds in rows:
        print(f"{model:<11} {label:<28} {fid:7.2f} {num_samples:8d} {seconds:8.1f}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - started:.0f}s")
