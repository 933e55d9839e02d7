"""Plan: the object the search optimises.

A Plan is K time steps, strictly decreasing, plus for each step the denoiser blocks that are skipped
or reused (see :mod:`optuna_diffusion.blocks` for the names, ``"mid.attn.0"``, ``"up.0"``,
``"blocks.7"``, ``"tail.12"`` ...), and optionally the solver that runs it.

Time steps are integers in the model's own units: for a DDPM-style schedule (``schedule_kind
"ddpm"``) an index ``t`` of ``[0, T - 1]`` into its ``alphas_cumprod``; for flow matching
(``"flow"``) ``t`` of ``[1, T]`` with ``sigma = t / T`` -- the ``timesteps`` a diffusers pipeline of
that model walks through. Sampling starts at ``timesteps[0]`` and the last update jumps straight to
the clean sample, as in AutoDiffusion.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Iterable, Sequence

from .errors import PlanError

SCHEDULE_KINDS = ("ddpm", "flow")


def timestep_range(num_train_timesteps: int, schedule_kind: str = "ddpm") -> tuple[int, int]:
    """The first and last allowed time step: ``[0, T - 1]`` for DDPM-style schedules, ``[1, T]`` for flow."""
    return (1, num_train_timesteps) if schedule_kind == "flow" else (0, num_train_timesteps - 1)


def as_int(value: Any, what: str) -> int:
    """An integer from ``value``, refusing bools, NaN/inf and non-integral floats."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise PlanError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, Integral):
        return int(value)
    if not math.isfinite(value) or value != int(value):
        raise PlanError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _as_name_sets(value: Iterable[Iterable[str]] | None, num_steps: int, what: str) -> tuple[frozenset[str], ...]:
    if value is None:
        return tuple(frozenset() for _ in range(num_steps))
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise PlanError(f"{what} must be a list of block-name lists, one per step, got {value!r}")
    sets = []
    for step, names in enumerate(value):
        if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
            raise PlanError(f"{what} of step {step} must be a list of block names, got {names!r}")
        names = tuple(names)
        for name in names:
            if not isinstance(name, str) or not name:
                raise PlanError(f"{what} of step {step} holds {name!r}, which is not a block name")
        sets.append(frozenset(names))
    if not sets:
        return tuple(frozenset() for _ in range(num_steps))
    if len(sets) != num_steps:
        raise PlanError(f"{what} has {len(sets)} entries but the plan has {num_steps} time steps")
    return tuple(sets)


@dataclass(frozen=True)
class Plan:
    """K strictly decreasing time steps and, per step, the blocks skipped or reused.

    Args:
        timesteps: strictly decreasing integers of ``[0, T - 1]`` (``[1, T]`` for flow matching).
        skips: per step, names of blocks replaced by their shortcut path (empty: none).
        reuses: per step, names of blocks (or branches) whose previous-step output stands in.
        num_train_timesteps: T of the model's noise schedule.
        schedule_kind: ``"ddpm"`` (time steps index ``alphas_cumprod``) or ``"flow"`` (sigma = t / T).
        solver: the solver that runs the plan (a name of :data:`optuna_diffusion.solvers.SOLVERS`), or
            None for the study's.
    """

    timesteps: tuple[int, ...]
    skips: tuple[frozenset[str], ...] = field(default=())
    reuses: tuple[frozenset[str], ...] = field(default=())
    num_train_timesteps: int = 1000
    schedule_kind: str = "ddpm"
    solver: str | None = None

    def __post_init__(self) -> None:
        num_train = as_int(self.num_train_timesteps, "num_train_timesteps")
        if num_train < 1:
            raise PlanError(f"num_train_timesteps must be positive, got {num_train}")
        if self.schedule_kind not in SCHEDULE_KINDS:
            raise PlanError(f"schedule_kind must be one of {', '.join(SCHEDULE_KINDS)}, got {self.schedule_kind!r}")
        if self.solver is not None and (not isinstance(self.solver, str) or not self.solver):
            raise PlanError(f"solver must be a solver name or None, got {self.solver!r}")
        low, high = timestep_range(num_train, self.schedule_kind)
        if isinstance(self.timesteps, (str, bytes)) or not isinstance(self.timesteps, Iterable):
            raise PlanError(f"timesteps must be a list of integers, got {self.timesteps!r}")
        timesteps = tuple(as_int(t, "every time step") for t in self.timesteps)
        if not timesteps:
            raise PlanError("a plan needs at least one time step")
        for t in timesteps:
            if not low <= t <= high:
                raise PlanError(f"time step {t} is outside [{low}, {high}]")
        if len(set(timesteps)) != len(timesteps):
            duplicates = sorted({t for t in timesteps if timesteps.count(t) > 1})
            raise PlanError(f"time steps must be distinct, {duplicates} repeat")
        if any(a <= b for a, b in zip(timesteps, timesteps[1:])):
            raise PlanError(f"time steps must be strictly decreasing, got {list(timesteps)}")
        skips = _as_name_sets(self.skips or None, len(timesteps), "skips")
        reuses = _as_name_sets(self.reuses or None, len(timesteps), "reuses")
        if reuses[0]:
            raise PlanError(f"step 0 cannot reuse {sorted(reuses[0])}: there is no previous step")
        for step, (skipped, reused) in enumerate(zip(skips, reuses)):
            if skipped & reused:
                raise PlanError(f"step {step} both skips and reuses {sorted(skipped & reused)}")
        object.__setattr__(self, "timesteps", timesteps)
        object.__setattr__(self, "skips", skips)
        object.__setattr__(self, "reuses", reuses)
        object.__setattr__(self, "num_train_timesteps", num_train)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def is_full_network(self) -> bool:
        """True when no step skips or reuses anything."""
        return not any(self.skips) and not any(self.reuses)

    def block_names(self) -> frozenset[str]:
        """Every block name the plan mentions."""
        return frozenset().union(*self.skips, *self.reuses)

    def with_blocks(self, skips: Sequence[Iterable[str]], reuses: Sequence[Iterable[str]] | None = None) -> "Plan":
        """The same time steps (and solver) with other per-step block choices."""
        return dataclasses.replace(self, skips=tuple(map(frozenset, skips)), reuses=tuple(map(frozenset, reuses or ())))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "timesteps": list(self.timesteps),
            "skips": [sorted(s) for s in self.skips],
            "reuses": [sorted(r) for r in self.reuses],
            "num_train_timesteps": self.num_train_timesteps,
        }
        if self.schedule_kind != "ddpm":
            data["schedule_kind"] = self.schedule_kind
        if self.solver is not None:
            data["solver"] = self.solver
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        if not isinstance(data, dict) or "timesteps" not in data:
            raise PlanError("a plan must be an object with a 'timesteps' list")
        unknown = set(data) - {"timesteps", "skips", "reuses", "num_train_timesteps", "schedule_kind", "solver"}
        if unknown:
            raise PlanError(f"unknown plan fields {sorted(unknown)}")
        return cls(
            timesteps=data["timesteps"],
            skips=data.get("skips") or (),
            reuses=data.get("reuses") or (),
            num_train_timesteps=data.get("num_train_timesteps", 1000),
            schedule_kind=data.get("schedule_kind", "ddpm"),
            solver=data.get("solver"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise PlanError(f"plan is not valid JSON: {error}") from None
        return cls.from_dict(data)

    def __str__(self) -> str:
        steps = " > ".join(map(str, self.timesteps))
        text = f"{self.num_steps} steps: {steps}" + (f" ({self.solver})" if self.solver else "")
        for step, (skipped, reused) in enumerate(zip(self.skips, self.reuses)):
            parts = [f"skip {','.join(sorted(skipped))}"] if skipped else []
            parts += [f"reuse {','.join(sorted(reused))}"] if reused else []
            if parts:
                text += f"; t={self.timesteps[step]}: {' '.join(parts)}"
        return text
