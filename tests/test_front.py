"""The front a user reads: plans no better than a hand-designed schedule are hidden, and counted."""

from __future__ import annotations

from optuna_diffusion.front import FrontRow, format_front
from optuna_diffusion.plan import Plan

ROWS = [
    FrontRow(0, 810.0, 1e8, Plan((900, 500, 100))),
    FrontRow(1, 12.0, 2e8, Plan((900, 500, 100))),
    FrontRow(2, 3.0, 3e8, Plan((900, 600, 300, 100))),
    FrontRow(3, 40.0, 4e7, Plan((900, 100))),  # no baseline known at K = 2: shown
]
LIMITS = {3: 25.0, 4: 6.0}


def numbers(table: str) -> list[int]:
    return [int(line.split()[0]) for line in table.splitlines()[1:] if line.split()[0].isdigit()]


def test_rows_worse_than_every_baseline_at_their_k_are_hidden_and_counted():
    table = format_front(ROWS, limits=LIMITS)
    assert numbers(table) == [1, 2, 3]
    assert "(1 front rows hidden: worse than every hand-designed schedule" in table and "--all" in table


def test_all_shows_every_row_and_max_fid_hides_more():
    assert numbers(format_front(ROWS, limits=LIMITS, show_all=True)) == [0, 1, 2, 3]
    table = format_front(ROWS, limits=LIMITS, max_fid=10)
    assert numbers(table) == [2] and "3 front rows hidden" in table and "above FID 10" in table
    assert "hidden" not in format_front(ROWS[1:3], limits=LIMITS)
