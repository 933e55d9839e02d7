"""The time-step search space: binds the genome checks and operators to one T and range of K."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import PlanError
from ._timestep_crossover import crossover
from ._timestep_genome import Genome, check_genome, check_space, random_genome
from ._timestep_mutation import mutate, nudge


@dataclass(frozen=True)
class TimestepSpace:
    """The genomes of a time-step search: K of ``[k_min, k_max]`` distinct steps of ``[0, T - 1]``.

    Implements :class:`~optuna_diffusion.samplers.GenomeSpace` with the operators of this package.

    Args:
        num_train_timesteps: T.
        k_min: fewest steps.
        k_max: most steps.
        schedule_kind: ``"ddpm"``, or ``"flow"`` for flow-matching models (steps of ``[1, T]``).
    """

    num_train_timesteps: int
    k_min: int
    k_max: int
    schedule_kind: str = "ddpm"

    def __post_init__(self) -> None:
        check_space(self.num_train_timesteps, self.k_range)

    @property
    def k_range(self) -> tuple[int, int]:
        return (self.k_min, self.k_max)

    def check(self, steps: Iterable[int]) -> Genome:
        return check_genome(
            steps, num_train_timesteps=self.num_train_timesteps, k_range=self.k_range, schedule_kind=self.schedule_kind
        )

    def contains(self, steps: object) -> bool:
        """Whether ``steps`` is a genome of this space (sorted largest first), without raising."""
        if not isinstance(steps, (list, tuple)):
            return False
        try:
            return tuple(steps) == self.check(steps)
        except PlanError:
            return False

    def random(self, rng: np.random.Generator) -> Genome:
        return random_genome(
            rng, num_train_timesteps=self.num_train_timesteps, k_range=self.k_range, schedule_kind=self.schedule_kind
        )

    def mutate(self, steps: Iterable[int], rng: np.random.Generator, *, replace_prob: float = 0.25) -> Genome:
        return mutate(
            steps, rng, num_train_timesteps=self.num_train_timesteps, k_range=self.k_range, replace_prob=replace_prob,
            schedule_kind=self.schedule_kind,
        )

    def refine(self, steps: Iterable[int], rng: np.random.Generator) -> Genome:
        """One step moved by 1 to 64 (log-uniform, as the compass search's moves), K kept."""
        return nudge(steps, rng, num_train_timesteps=self.num_train_timesteps, k_range=self.k_range, schedule_kind=self.schedule_kind)

    def crossover(self, parent_a: Iterable[int], parent_b: Iterable[int], rng: np.random.Generator) -> Genome:
        return crossover(
            parent_a, parent_b, rng, num_train_timesteps=self.num_train_timesteps, k_range=self.k_range,
            schedule_kind=self.schedule_kind,
        )

    def to_dict(self) -> dict[str, int | str]:
        """The space as stored on every trial (:data:`~optuna_diffusion.trial_plan.SPACE_KEY`)."""
        space: dict[str, int | str] = {"num_train_timesteps": self.num_train_timesteps, "k_min": self.k_min, "k_max": self.k_max}
        if self.schedule_kind != "ddpm":
            space["schedule_kind"] = self.schedule_kind
        return space
