"""Wall time of the default study: `optuna-diffusion optimize --study digits` in an empty folder.

Both stages with their default budgets (stage 1: 200 trials, stage 2: 100 trials). Target: <= 15 min
on a 2-core CPU machine. With ``--figure PATH`` it then draws the study's fronts there
(``optuna-diffusion plot``; benchmarks/README.md's figure is ``benchmarks/figures/digits-front.png``).
Run: python benchmarks/digits_study_time.py [--figure benchmarks/figures/digits-front]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", type=Path, help="draw the fronts to PATH.png and PATH.html")
    args = parser.parse_args()
    executable = shutil.which("optuna-diffusion") or "optuna-diffusion"
    command = [executable, "optimize", "--study", "digits"]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = subprocess.run(command, cwd=folder, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        seconds = time.perf_counter() - started
        print(result.stdout)
        if args.figure is not None:
            args.figure.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([executable, "plot", "--study", "digits", "--out", str(args.figure.resolve())], cwd=folder, check=True)
    print(f"{' '.join(command[1:])}: {seconds:.0f} s ({seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
