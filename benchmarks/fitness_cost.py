"""Cheaper fitness: UNet work and wall time to reach a good plan, with the prefix cache and multi-fidelity FID.

On the digits model (500 samples per FID, common random numbers), stage 1 (TimestepSampler, first
generation seeded with the hand-designed schedules, population 20) runs the same number of trials
under four fitness set-ups:

* ``plain``: every candidate scored on all 500 samples, every step computed;
* ``prefix cache``: denoiser outputs of shared trajectory prefixes reused (exact);
* ``multi-fidelity``: candidates scored on the first 125 samples first, finished only if they could
  still reach the front or the parents (margin from the measured spread);
* ``both``.

For each set-up and seed it records, after every trial, the cumulative UNet image evaluations
(images x steps actually computed, in thousands: k) and wall time, and the best full-size FID so far. It prints the
median over seeds of: the final best FID, the work and time needed to come within 5% of the PLAIN
run's final best (as a ratio to plain's own), and the best FID reached within plain's total wall time.
As a ceiling for multi-fidelity it also prints, for the runs that use it, the share of finished plans
that could not have been stopped (each joined the front or the parents when it was scored:
``fidelity.could_matter`` of its own full-size FID), and the whole run's work had a perfect stopping
rule stopped every other plan at the low fidelity, on the same search path (a stopped plan's work
taken as the low share of a finished one's), as a ratio to plain's all work.

Run: python benchmarks/fitness_cost.py [--k 4] [--k-max 8] [--trials 200] [--seeds 0 1 2]
"""

from __future__ import annotations

import dataclasses
import statistics
import sys

import optuna

import _harness
from optuna_diffusion.evaluation import PlanEvaluator, digits_evaluator
from optuna_diffusion.fidelity import FidelityPolicy, could_matter
from optuna_diffusion.objective import PlanObjective
from optuna_diffusion.prefix_cache import PrefixCache
from optuna_diffusion.population import population_split, sampler_for
from optuna_diffusion.trial_plan import MACS_ATTR, is_low_fidelity

SETUPS = {"plain": (False, False), "prefix cache": (True, False), "multi-fidelity": (False, True), "both": (True, True)}
NUM_SAMPLES = 500
LOW_SAMPLES = 125
POPULATION = 20
CACHE_BYTES = 256 * 2**20


@dataclasses.dataclass
class Trace:
    """Per trial: cumulative image evaluations and seconds, and the best full-size FID so far."""

    work: list[int]
    seconds: list[float]
    best: list[float]
    trials: list[optuna.trial.FrozenTrial] = dataclasses.field(default_factory=list)

    def first_reaching(self, target: float) -> int | None:
        return next((i for i, best in enumerate(self.best) if best <= target), None)

    def best_within(self, seconds: float) -> float:
        return min((b for b, s in zip(self.best, self.seconds) if s <= seconds), default=float("inf"))

    def perfect_stopping(self, keep: int) -> tuple[float, float]:
        """The share of finished plans that could matter when scored, and the run's work had every other
        finished plan been stopped at the low fidelity (its work: the low share of its own)."""
        finished, needed, saved, work_before = [], 0, 0.0, 0
        for trial, work in zip(self.trials, self.work):
            own_work, work_before = work - work_before, work
            if is_low_fidelity(trial) or not trial.values:
                continue
            fid = trial.values[0]
            if could_matter(fid, trial.user_attrs.get(MACS_ATTR), finished, keep=keep, fid_of=lambda t: t.values[0]):
                needed += 1
            else:
                saved += own_work * (1 - LOW_SAMPLES / NUM_SAMPLES)
            finished.append(trial)
        return needed / max(1, len(finished)), self.work[-1] - saved


def run(evaluator: PlanEvaluator, setup: str, seed: int, k_min: int, k_max: int, trials: int, model: str) -> Trace:
    cache, multi_fidelity = SETUPS[setup]
    evaluator.generator.prefix_cache = PrefixCache(CACHE_BYTES) if cache else None
    config = _harness.replace_section(_harness.study_config("digits", model), "sampling", seed=seed)
    config = _harness.replace_section(config, "timesteps", k_min=k_min, k_max=k_max, population_size=POPULATION)
    sampler = sampler_for("timesteps", config, evaluator)  # the study's own stage-1 sampler
    fidelity = FidelityPolicy(low_samples=LOW_SAMPLES, keep=population_split(POPULATION)["num_parents"]) if multi_fidelity else None
    objective = PlanObjective(evaluator, num_samples=NUM_SAMPLES, fidelity=fidelity)
    trace = Trace([], [], [])
    start_work, timer = evaluator.generator.image_evaluations, _harness.Timer()
    best = float("inf")

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal best
        if not is_low_fidelity(trial) and trial.values:
            best = min(best, trial.values[0])
        trace.trials.append(trial)
        trace.work.append(evaluator.generator.image_evaluations - start_work)
        trace.seconds.append(timer.seconds)
        trace.best.append(best)

    _harness.optimize(sampler, objective, trials, directions=["minimize", "minimize"], callbacks=[record])
    return trace


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = _harness.argument_parser(__doc__)
    parser.add_argument("--k", type=int, default=4, help="fewest steps")
    parser.add_argument("--k-max", type=int, default=None, help="most steps (default: --k, one K)")
    _harness.add_common_arguments(parser, model="digits", trials=200, seeds=(0, 1, 2))
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    args = parser.parse_args()
    k_max = args.k_max or args.k
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = _harness.study_config("digits", args.model)
    evaluator = digits_evaluator(config.sampling, model=config.model.source)  # the study's batches of 500
    setups = ["plain", *[s for s in args.setups if s != "plain"]]

    traces = {}
    for seed in args.seeds:
        for setup in setups:
            trace = traces[(setup, seed)] = run(evaluator, setup, seed, args.k, k_max, args.trials, args.model)
            print(f"# seed {seed} {setup}: best {trace.best[-1]:.3f}, {trace.work[-1] / 1e3:.0f}k image evaluations, "
                  f"{trace.seconds[-1]:.0f} s", file=sys.stderr, flush=True)
    steps = f"K = {args.k}" if k_max == args.k else f"K in {args.k}..{k_max}"
    print(f"{args.model}, stage 1, {steps}, {args.trials} trials, {NUM_SAMPLES} samples ({LOW_SAMPLES} first), seeds {args.seeds}; medians")
    print(f"{'set-up':<15} {'final FID':>9} {'work to 5%':>11} {'time to 5%':>11} {'work ratio':>10} {'time ratio':>10} {'FID @ plain time':>16} {'all work':>9} {'all time':>9}")
    for setup in setups:
        rows = []
        for seed in args.seeds:
            plain, trace = traces[("plain", seed)], traces[(setup, seed)]
            target = plain.best[-1] * 1.05
            reached, plain_reached = trace.first_reaching(target), plain.first_reaching(target)
            row = {"final": trace.best[-1], "at_plain_time": trace.best_within(plain.seconds[-1]),
                   "all_work": trace.work[-1] / 1e3, "all_time": trace.seconds[-1]}
            if reached is not None:
                row.update(work=trace.work[reached] / 1e3, time=trace.seconds[reached],
                           work_ratio=trace.work[reached] / plain.work[plain_reached],
                           time_ratio=trace.seconds[reached] / plain.seconds[plain_reached])
            rows.append(row)
        def m(key):
            return median([r[key] for r in rows if key in r])
        reached_note = "" if all("work" in r for r in rows) else f" (reached in {sum('work' in r for r in rows)}/{len(rows)})"
        print(f"{setup:<15} {m('final'):9.3f} {m('work'):10.0f}k {m('time'):10.0f}s {m('work_ratio'):10.2f} {m('time_ratio'):10.2f} "
              f"{m('at_plain_time'):16.3f} {m('all_work'):8.0f}k {m('all_time'):8.0f}s{reached_note}")
    keep = population_split(POPULATION)["num_parents"]
    for setup in [s for s in setups if SETUPS[s][1]]:
        ceilings = [(*traces[(setup, seed)].perfect_stopping(keep), traces[("plain", seed)].work[-1]) for seed in args.seeds]
        print(f"ceiling, {setup}: finished plans that joined the front or the {keep} parents when scored "
              + " ".join(f"{share:.0%}" for share, _, _ in ceilings)
              + "; all work with a perfect stopping rule / plain's all work "
              + " ".join(f"{work / plain:.2f}" for _, work, plain in ceilings) + f" (seeds {args.seeds})")
    evaluator.close()


if __name__ == "__main__":
    main()
