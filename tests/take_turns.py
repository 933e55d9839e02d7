"""A barrier for two worker processes on one storage: they take turns, so their trials interleave.

Worker ``me`` starts its n-th trial only once the other worker has started its (n-1)-th. Waiting is
for that event (read from the storage), bounded by a safety net; the verdict never depends on speed.
"""

from __future__ import annotations

import time

import optuna

WORKER_ATTR = "test_worker"
SAFETY_NET = 600


def take_turns(study: optuna.Study, trial: optuna.Trial, me: str, total: int) -> None:
    trial.set_user_attr(WORKER_ATTR, me)
    deadline = time.monotonic() + SAFETY_NET
    while time.monotonic() < deadline:
        started = [t.user_attrs.get(WORKER_ATTR) for t in study.get_trials(deepcopy=False)]
        mine, others = started.count(me), sum(1 for w in started if w not in (None, me))
        if others >= min(mine - 1, total):
            return
        time.sleep(0.01)  # poll for the event
    raise TimeoutError(f"worker {me}: the other worker started no trial in {SAFETY_NET} s")
