"""Soak test: several workers run the digits study's stage 1 against one PostgreSQL database.

Prints trials per hour, the time spent in storage calls per trial (target: < 2% of trial time) and
checks that nothing was lost: exactly the budget of complete trials, no failed or running ones left,
no plan evaluated twice.

Run: python benchmarks/soak.py [--workers 3] [--trials-per-worker 100] [--storage URL]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna

POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
# The storage API that trials call; record_heartbeat runs in a background thread and is not counted.
# Optuna wraps an RDBStorage in a _CachedStorage that calls some private methods of it instead.
STORAGE_METHODS = [name for name in vars(optuna.storages.BaseStorage) if not name.startswith("_") and name != "record_heartbeat"]
CACHED_STORAGE_CALLS = ["_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials", "_get_stale_trial_ids"]


def time_storage_calls(storage: optuna.storages.BaseStorage, seconds: Counter, calls: Counter) -> optuna.storages.BaseStorage:
    """Wrap ``storage``'s methods so that main-thread time and calls add up, per method, in ``seconds`` and ``calls``.

    Only the outermost call counts: a method that calls another wrapped one is timed once.
    """
    main = threading.main_thread()
    depth = [0]

    def timed(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            if threading.current_thread() is not main or depth[0]:
                return method(*args, **kwargs)
            depth[0] += 1
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1
                seconds[method.__name__] += time.perf_counter() - started
                calls[method.__name__] += 1

        return wrapper

    for name in STORAGE_METHODS + CACHED_STORAGE_CALLS:
        if callable(getattr(storage, name, None)):
            setattr(storage, name, timed(getattr(storage, name)))
    return storage


def worker(name: str, storage_url: str, budget: int, out: Path) -> None:
    from optuna_diffusion import runner
    from optuna_diffusion.storage import open_storage
    from optuna_diffusion.study_config import load_study_config

    storage_seconds, storage_calls = Counter(), Counter()
    runner.open_storage = lambda url, **kwargs: time_storage_calls(open_storage(url, **kwargs), storage_seconds, storage_calls)
    config = load_study_config("digits")
    config = dataclasses.replace(config, name=name, timesteps=dataclasses.replace(config.timesteps, n_trials=budget))
    started = time.perf_counter()
    runner.run_optimize(config, storage_url, stages=("timesteps",), echo=lambda line: None)
    seconds = time.perf_counter() - started
    out.write_text(json.dumps({"seconds": seconds, "storage_seconds": storage_seconds, "storage_calls": storage_calls}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--trials-per-worker", type=int, default=100)
    parser.add_argument("--storage", default=POSTGRES)
    parser.add_argument("--worker", nargs=3, metavar=("NAME", "BUDGET", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, budget, out = args.worker
        worker(name, args.storage, int(budget), Path(out))
        return

    name = f"soak-{uuid.uuid4().hex[:8]}"
    budget = args.workers * args.trials_per_worker
    with tempfile.TemporaryDirectory() as folder:
        outs = [Path(folder) / f"worker-{i}.json" for i in range(args.workers)]
        started = time.perf_counter()
        processes = [
            subprocess.Popen([sys.executable, __file__, "--storage", args.storage, "--worker", name, str(budget), str(out)],
                             cwd=folder, stderr=subprocess.PIPE, text=True)
            for out in outs
        ]
        errors = [p.communicate()[1] for p in processes]
        codes = [p.returncode for p in processes]
        wall = time.perf_counter() - started
        reports = [json.loads(out.read_text()) for out in outs if out.exists()]
    for code, error in zip(codes, errors):
        if code:
            print(f"a worker exited {code}: {error.strip().splitlines()[-1] if error.strip() else 'no message'}")

    study = optuna.load_study(study_name=f"{name}-timesteps", storage=args.storage)
    trials = study.get_trials(deepcopy=False)
    states = {state.name: sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    plans = {tuple(t.user_attrs["timesteps"]) for t in complete}
    durations = sum(t.duration.total_seconds() for t in complete)
    seconds_by_method = sum((Counter(r["storage_seconds"]) for r in reports), Counter())
    storage_seconds = sum(seconds_by_method.values())
    calls_by_method = sum((Counter(r["storage_calls"]) for r in reports), Counter())
    calls = sum(calls_by_method.values())
    worker_seconds = sum(r["seconds"] for r in reports)

    print(f"{args.workers} workers x {args.trials_per_worker} trials, digits stage 1 (500 samples), {args.storage.split('@')[-1]}")
    print(f"exit codes {codes}; wall {wall:.0f} s; {len(complete) / wall * 3600:.0f} complete trials/hour")
    print(f"trial states: {', '.join(f'{k} {v}' for k, v in states.items() if v)}")
    print(f"storage calls: {calls} ({calls / max(len(complete), 1):.1f} per trial), "
          f"{storage_seconds / max(len(complete), 1) * 1000:.1f} ms per trial")
    print(f"storage time / worker time: {storage_seconds / worker_seconds:.2%} "
          f"(/ sum of trial durations: {storage_seconds / durations:.2%}; target < 2%)")
    per_trial = 1000 / max(len(complete), 1)
    print("storage time per trial, by method: " + ", ".join(
        f"{m} {s * per_trial:.1f} ms ({calls_by_method[m] * per_trial / 1000:.1f} calls)" for m, s in seconds_by_method.most_common()))
    lost = len(complete) != budget or states["FAIL"] or states["RUNNING"] or len(plans) != len(complete)
    print(f"nothing lost: {'NO' if lost else 'yes'} ({len(complete)}/{budget} complete, {len(plans)} distinct plans)")
    optuna.delete_study(study_name=f"{name}-timesteps", storage=args.storage)


if __name__ == "__main__":
    main()
