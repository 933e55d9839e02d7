"""Wall time of the default study: `optuna-diffusion optimize --study digits` in an empty folder.

Both stages with their default budgets (stage 1: 200 trials, stage 2: 100 trials). Target: <= 15 min
on a 2-core CPU machine.
Run: python benchmarks/digits_study_time.py
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time


def main() -> None:
    command = [shutil.which("optuna-diffusion") or "optuna-diffusion", "optimize", "--study", "digits"]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run(command, cwd=folder, check=True, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
    print(f"{' '.join(command[1:])}: {seconds:.0f} s ({seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
