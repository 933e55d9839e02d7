"""Teacher fitness on the digits model: does the distance to a many-step teacher rank plans as FID does?

Part 1, ranking. ``--plans`` random plans (K distinct time steps drawn uniformly, seeded) at each K of
``--ks`` are sampled once each on the study's ``--samples`` samples (common random numbers) and scored
from the same images by FID (digits features, all 1,797 digits) and by the distance to the teacher
(the same model, labels and noise with ``min(100, T)`` = 100 uniform DDIM steps, no skips): ``-PSNR``
and ``1-SSIM`` of the 8-bit images, MSE of the raw samples. It prints Spearman's rank correlation of each
with FID, and how many of FID's 10 best plans are among the distance's 10 best.

Part 2, search. Stage 1's TimestepSampler (the study's, first generation seeded with the hand-designed
schedules, population 20) runs ``--trials`` evaluations at K = ``--search-k`` on each fitness, every
candidate on all ``--samples`` samples (no multi-fidelity, so the evaluations are equal). The best plan
of each search is then scored by FID on all 1,797 samples. Cost: UNet image evaluations and seconds of
the search, and of generating the teacher once.

``--study digits-t2i`` measures the same on the bundled text-to-image pipeline: its teacher is the
preset's (``teacher_steps``), its images are VAE-decoded 32x32 digits (FID reads them back at 8x8), and
part 2 is skipped unless ``--seeds`` are given.

Run: python benchmarks/teacher_fitness.py [--study digits] [--plans 100] [--ks 4 6] [--trials 60] [--seeds 0 1 2]
     [--threads 1]
"""

from __future__ import annotations

import random
import statistics
import sys

import numpy as np
import torch

import _harness
from optuna_diffusion.fitness import FIDFitness, TeacherFitness
from optuna_diffusion.fitness._base import to_uint8
from optuna_diffusion.fitness._teacher import distances
from optuna_diffusion.objective import PlanObjective
from optuna_diffusion.plan import Plan
from optuna_diffusion.population import sampler_for
from optuna_diffusion.study import build_evaluator
from optuna_diffusion.study_config import load_study_config

DISTANCES = ("psnr", "ssim", "mse")
ALL_DIGITS = _harness.ALL_DIGITS


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (scipy when installed, else Pearson of average ranks)."""
    try:
        from scipy.stats import spearmanr

        return float(spearmanr(a, b).statistic)
    except ImportError:
        def ranks(values: list[float]) -> np.ndarray:
            order = np.argsort(values, kind="stable")
            ranked = np.empty(len(values))
            ranked[order] = np.arange(len(values), dtype=float)
            for value in set(values):  # ties share their average rank
                tied = np.asarray(values) == value
                ranked[tied] = ranked[tied].mean()
            return ranked

        return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def top_overlap(a: list[float], b: list[float], n: int = 10) -> int:
    return len(set(np.argsort(a)[:n]) & set(np.argsort(b)[:n]))


def random_plans(k: int, count: int, seed: int, num_train: int) -> list[Plan]:
    rng = random.Random(seed * 1000 + k)
    plans: dict[Plan, None] = {}
    while len(plans) < count:
        plans[Plan(sorted(rng.sample(range(num_train), k), reverse=True))] = None
    return list(plans)


def ranking(evaluator, fid: FIDFitness, teacher_raw: torch.Tensor, plans: list[Plan], samples: int) -> dict[str, list[float]]:
    """FID and every teacher distance of each plan, from the same images."""
    model = evaluator.model
    teacher_images = to_uint8(model.family.decode(model, teacher_raw))
    scores: dict[str, list[float]] = {name: [] for name in ("fid", *DISTANCES)}
    for plan in plans:
        raw = evaluator.generate(plan, samples, 0, samples, decoded=False)
        images = model.family.decode(model, raw).clamp(-1, 1)
        fid.begin(samples)
        fid.update(images, 0, samples)
        scores["fid"].append(fid.compute())
        for name in DISTANCES:
            target = teacher_raw if name == "mse" else teacher_images
            scores[name].append(float(distances(raw if name == "mse" else images, target, name).double().mean()))
    return scores


def search(evaluator, config, fitness, seed: int, k: int, trials: int, samples: int) -> tuple[Plan, float, int, float]:
    """Best plan of a stage-1 search on ``fitness``, its value, and the search's image evaluations and seconds."""
    evaluator.fitness = fitness
    config = _harness.replace_section(config, "sampling", seed=seed)
    config = _harness.replace_section(config, "timesteps", k_min=k, k_max=k, population_size=20)
    sampler = sampler_for("timesteps", config, evaluator)
    if evaluator.generator.prefix_cache is not None:
        evaluator.generator.prefix_cache.clear()  # each search pays for its own prefixes
    work, timer = evaluator.generator.image_evaluations, _harness.Timer()
    study = _harness.optimize(sampler, PlanObjective(evaluator, num_samples=samples), trials,
                              directions=["minimize", "minimize"])
    seconds = timer.seconds
    best = min(study.trials, key=lambda t: (t.values[0], t.number))
    return Plan(best.user_attrs["timesteps"]), best.values[0], evaluator.generator.image_evaluations - work, seconds


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    parser.add_argument("--plans", type=int, default=100, help="random plans per K")
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 6])
    parser.add_argument("--samples", type=int, default=None, help="samples per score (default: the digits study's 500)")
    parser.add_argument("--trials", type=int, default=60, help="evaluations per search")
    parser.add_argument("--search-k", type=int, default=4)
    parser.add_argument("--distance", default="psnr", choices=DISTANCES, help="the teacher distance searched on")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="searches (default: 0 1 2 on digits, none on digits-t2i)")
    parser.add_argument("--study", default="digits", choices=["digits", "digits-t2i"])
    _harness.add_common_arguments(parser, threads=1)
    args = parser.parse_args()
    _harness.quiet_process(args.threads)
    config = load_study_config(args.study)
    seeds = args.seeds if args.seeds is not None else ([0, 1, 2] if args.study == "digits" else [])
    samples = args.samples or config.timesteps.num_samples
    evaluator = build_evaluator(config)  # the study's batches, prefix cache and FID
    fid = evaluator.fitness if config.fitness.metric == "fid" else evaluator.rescore_fitness
    num_train = evaluator.generator.schedule.num_train_timesteps

    teacher = evaluator.bind(TeacherFitness("mse", steps=config.fitness.teacher_steps))
    timer, work = _harness.Timer(), evaluator.generator.image_evaluations
    teacher_raw = teacher.targets(samples)
    teacher_seconds, teacher_work = timer.seconds, evaluator.generator.image_evaluations - work
    print(f"teacher: {teacher.plan.num_steps} uniform {config.sampling.solver} steps, {samples} samples: "
          f"{teacher_work / 1e3:.0f}k image evaluations, {teacher_seconds:.0f} s (once per study)")

    print(f"\nranking: {args.plans} random plans per K, {samples} samples each, Spearman with FID "
          f"(and how many of FID's 10 best are the distance's 10 best)")
    print(f"{'K':>3} {'FID range':>15} " + " ".join(f"{'-PSNR' if d == 'psnr' else '1-SSIM' if d == 'ssim' else 'MSE':>14}" for d in DISTANCES))
    for k in args.ks:
        timer = _harness.Timer()
        scores = ranking(evaluator, fid, teacher_raw, random_plans(k, args.plans, 0, num_train), samples)
        cells = [f"{spearman(scores['fid'], scores[d]):6.3f} ({top_overlap(scores['fid'], scores[d]):2d}/10)" for d in DISTANCES]
        fids = scores["fid"]
        print(f"{k:>3} {min(fids):6.2f}..{max(fids):7.2f} " + " ".join(f"{c:>14}" for c in cells), flush=True)
        print(f"# K = {k}: {timer.seconds:.0f} s", file=sys.stderr, flush=True)

    if not seeds:
        evaluator.close()
        return
    teacher_search = evaluator.bind(TeacherFitness(args.distance, steps=config.fitness.teacher_steps))
    teacher_search._targets = {samples: to_uint8(evaluator.model.family.decode(evaluator.model, teacher_raw)) if teacher_search.decoded else teacher_raw}
    print(f"\nsearch: TimestepSampler, K = {args.search_k}, {args.trials} evaluations of {samples} samples each; "
          f"best plan's FID on all {ALL_DIGITS} digits")
    print(f"{'seed':>4} {'fitness':>8} {'FID@1797':>9} {'work':>7} {'seconds':>8}  best plan")
    results: dict[str, list[tuple[float, int, float]]] = {"fid": [], "teacher": []}
    for seed in seeds:
        for name, meter in (("fid", fid), ("teacher", teacher_search)):
            plan, _, work, seconds = search(evaluator, config, meter, seed, args.search_k, args.trials, samples)
            full = evaluator.evaluate(plan, ALL_DIGITS, fitness=fid).fid
            results[name].append((full, work, seconds))
            label = "FID" if name == "fid" else args.distance
            print(f"{seed:>4} {label:>8} {full:9.3f} {work / 1e3:6.0f}k {seconds:7.0f}s  {list(plan.timesteps)}", flush=True)
    for name, rows in results.items():
        fids, works, seconds = zip(*rows)
        extra = f" (+ teacher once: {teacher_work / 1e3:.0f}k, {teacher_seconds:.0f} s)" if name == "teacher" else ""
        print(f"median {name:>8}: FID@1797 {statistics.median(fids):.3f}, work {statistics.median(works) / 1e3:.0f}k, "
              f"{statistics.median(seconds):.0f} s{extra}")
    evaluator.close()


if __name__ == "__main__":
    _harness.timed_main(main, "\ntotal {:.0f} s")
