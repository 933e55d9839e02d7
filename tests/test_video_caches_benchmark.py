"""benchmarks/video_caches.py on the bundled digits-video model with 4 clips: diffusers' caches metered as spent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from optuna_diffusion.plan import Plan

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "video_caches.py"
STEPS = (921, 631, 365, 149)


def flow_plan(skips: tuple[frozenset[str], ...] = ()) -> dict:
    return Plan(STEPS, skips=skips, num_train_timesteps=1000, schedule_kind="flow").to_dict()


def run_benchmark(tmp_path: Path) -> dict[str, list[float]]:
    """Rows of the printed table by setting name: FID, PSNR, MMACs."""
    plans = tmp_path / "plans.json"
    ours = flow_plan((frozenset(), frozenset({"blocks.0.attn"}), frozenset(), frozenset()))
    plans.write_text(json.dumps({"study": "digits-video", "samples": 4, "stage1": {"plan": flow_plan(), "macs": 0},
                                 "stage2": [{"plan": ours}]}))
    command = [sys.executable, str(SCRIPT), "--plans", str(plans), "--samples", "4", "--caches", "fbc", "mag",
               "--teacher-dir", str(tmp_path / "teacher")]
    done = subprocess.run(command, cwd=SCRIPT.parent, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {}
    for line in done.stdout.splitlines():
        name, values = line[:24].strip(), line[24:].split()
        if len(values) >= 3 and name and not name.startswith("setting"):
            try:
                rows[name] = [float(v) for v in values[:3]]
            except ValueError:
                continue
    return rows


@pytest.mark.slow  # a process of about 30 s
def test_caches_are_metered_as_spent_and_a_cache_that_never_hits_equals_the_plan(tmp_path):
    rows = run_benchmark(tmp_path)
    full = rows["stage 1"]
    assert rows["FBC 0"] == full  # threshold 0 never caches: same samples, every MAC spent
    assert rows["ours (stage 2)"][2] < full[2]
    assert rows["MagCache 4"][2] < full[2]  # calibrated ratios let the loosest threshold skip whole steps
    assert all(values[2] <= full[2] for values in rows.values())
