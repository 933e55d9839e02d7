"""Overhead of the evaluation engine over the bare network work it needs.

Times one Plan evaluation (K = 4 and 10, 1,000 samples, digits) and, in the same run, the bare
UNet forwards plus feature extraction that evaluation needs (same batches, no solver, no metric).
Target: evaluation time <= 1.25x the bare work.
Run: python benchmarks/throughput.py [--samples 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from optuna_diffusion.baselines import baseline_plan
from optuna_diffusion.evaluation import digits_evaluator
from optuna_diffusion.generation import class_labels, initial_noise


def bare_work(evaluator, timesteps: tuple[int, ...], num_samples: int) -> float:
    """Seconds for the UNet forwards and feature extraction alone."""
    model, settings = evaluator.model, evaluator.settings
    extractor = evaluator.meter.extractor
    labels = class_labels(settings.seed, num_samples, settings.num_classes)
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, num_samples, settings.batch_size):
            stop = min(start + settings.batch_size, num_samples)
            x = initial_noise(settings.seed, start, stop, model.sample_shape)
            for t in timesteps:
                x = model.denoiser(x, torch.tensor(t), class_labels=labels[start:stop]).sample
            extractor(x.clamp(-1, 1))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    evaluator = digits_evaluator()
    alphas_cumprod = evaluator.generator.schedule.alphas_cumprod
    print(f"{'K':>3} {'evaluate s':>11} {'bare s':>8} {'ratio':>6}   (best of {args.repeats}, {args.samples} samples, {torch.get_num_threads()} threads)")
    for k in (4, 10):
        plan = baseline_plan("uniform", k, alphas_cumprod)
        evaluate_s = min(evaluator.evaluate(plan, args.samples).seconds for _ in range(args.repeats))
        bare_s = min(bare_work(evaluator, plan.timesteps, args.samples) for _ in range(args.repeats))
        print(f"{k:>3} {evaluate_s:11.3f} {bare_s:8.3f} {evaluate_s / bare_s:6.2f}")
    evaluator.close()


if __name__ == "__main__":
    main()
