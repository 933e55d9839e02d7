"""One search over many devices of one machine: a worker process per device, all on one storage.

``optuna-diffusion optimize --devices cuda:0,cuda:1`` (or ``--workers N``) starts one ``optimize``
process per device with the same study and storage, and waits for them. They share the search the
way any workers on one storage do (:mod:`optuna_diffusion.runner`): the trial budget is exact over all
of them (:class:`~optuna_diffusion.budget.TrialBudget` plus Optuna's ``MaxTrialsCallback``), and the
same command run again resumes. The default storage is a journal file, ``NAME.journal`` (Optuna's
``JournalFileBackend``, safe for processes on one machine); SQLite is refused, being not for parallel
workers. Each worker's lines are printed with its device in front. A Ctrl-C stops them all: every
worker gets one SIGINT (each in its own session, so a terminal's Ctrl-C reaches them only through here)
and fails its interrupted trial cleanly, to be retried on resume; a second Ctrl-C ends them at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

import torch

from .devices import resolve_device
from .errors import ConfigError

Echo = Callable[[str], None]


def default_parallel_storage(name: str) -> str:
    """The journal file several workers of study ``name`` share by default: ``NAME.journal`` in the working directory."""
    return f"{name}.journal"


def check_parallel_storage(url: str) -> None:
    """A one-line error for a storage that parallel workers must not share (SQLite)."""
    if url.startswith("sqlite:"):
        raise ConfigError(
            f"storage {url} is SQLite, which is not for parallel workers: leave --storage out (a journal file, "
            "NAME.journal) or give a journal file path or a PostgreSQL/MySQL URL"
        )


def worker_devices(devices: str | None, workers: int | None, device: str) -> list[str]:
    """The device of each worker: the ``--devices`` list, or ``--workers`` N spread over the CUDA GPUs
    (one each, round robin), else all on ``device`` (auto: CUDA, else MPS, else CPU). Each is checked."""
    if devices is not None and workers is not None:
        raise ConfigError("give --devices or --workers, not both")
    if devices is not None:
        names = [name.strip() for name in devices.split(",")]
        if not names or any(not name for name in names):
            raise ConfigError(f"--devices must be a comma-separated list such as cuda:0,cuda:1 or cpu,cpu, got {devices!r}")
    else:
        if workers is None or isinstance(workers, bool) or workers < 1:
            raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
        chosen = resolve_device(device)
        if chosen.type == "cuda" and chosen.index is None:
            count = torch.cuda.device_count()
            names = [f"cuda:{i % count}" for i in range(workers)]
        else:
            names = [str(chosen)] * workers
    return [str(resolve_device(name)) for name in names]


def run_workers(commands: Sequence[Sequence[str]], labels: Sequence[str], *, echo: Echo = print) -> int:
    """Run the worker ``commands`` side by side, their output prefixed by ``labels``; their worst exit code.

    A Ctrl-C (KeyboardInterrupt here) sends every worker one SIGINT and waits for them; the next one
    sends another (the workers then exit at once). Returns 130 after an interruption.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes = [
        subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches the workers once, forwarded from here
        )
        for command in commands
    ]
    lock = threading.Lock()

    def pump(process: subprocess.Popen, label: str) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with lock:
                echo(f"[{label}] {line.rstrip()}")

    pumps = [threading.Thread(target=pump, args=(p, label), daemon=True) for p, label in zip(processes, labels)]
    for thread in pumps:
        thread.start()
    for process, label in zip(processes, labels):
        echo(f"started worker {label} (pid {process.pid})")
    interrupted = False
    while True:
        try:
            codes = [process.wait() for process in processes]
            break
        except KeyboardInterrupt:
            interrupted = True
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)
    for thread in pumps:
        thread.join(timeout=10)
    if interrupted:
        return 130
    failures = [code if code > 0 else 128 - code for code in codes if code]  # -N: killed by signal N
    return max(failures, default=0)


def worker_command(arguments: Sequence[str], device: str, storage: str) -> list[str]:
    """The command line of one worker: ``optimize`` with ``arguments`` on ``device`` and ``storage``."""
    return [sys.executable, "-m", "optuna_diffusion", "optimize", *arguments, "--device", device, "--storage", storage]
