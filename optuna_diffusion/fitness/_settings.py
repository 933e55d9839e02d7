"""``[fitness]``: what a search minimises besides MACs, and what re-scores its final front."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..settings import Section, at_least, one_of, setting
from ._base import METRICS
from ._teacher import DISTANCES


@dataclass(frozen=True)
class FitnessSettings(Section):
    """The ``[fitness]`` section of a study file.

    Args:
        metric: ``"fid"`` (the ``[fid]`` section's features and reference), ``"clip-score"`` (needs
            ``clip_model``; text-to-image pipelines) or ``"teacher"`` (distance to the model's own
            many-step samples; needs no reference data).
        teacher_distance: ``"psnr"`` or ``"ssim"`` on decoded images, ``"mse"`` on latents.
        teacher_steps: the teacher's steps (None: ``min(100, T)``).
        clip_model: local folder of a ``CLIPModel`` and its processor, for ``clip-score``.
        rescore: after a stage, re-score its Pareto front with this metric (None: no re-scoring).
        rescore_samples: samples of a re-scored plan (None: the stage's ``num_samples``).
    """

    SECTION: ClassVar[str] = "fitness"

    metric: str = setting("fid", check=one_of(METRICS))
    teacher_distance: str = setting("psnr", check=one_of(DISTANCES))
    teacher_steps: int | None = setting(None, check=at_least(2))
    clip_model: str | None = setting(None)
    rescore: str | None = setting(None, check=one_of(METRICS))
    rescore_samples: int | None = setting(None, check=at_least(2))

    def validate(self) -> None:
        if self.rescore is not None and self.rescore == self.metric:
            raise self.error("rescore", f"fitness.rescore = {self.rescore!r} is the search metric itself; choose another or leave it out")
        if self.rescore_samples is not None and self.rescore is None:
            raise self.error("rescore_samples", "fitness.rescore_samples needs fitness.rescore")
        if "clip-score" in (self.metric, self.rescore) and not self.clip_model:
            key = "metric" if self.metric == "clip-score" else "rescore"
            raise self.error(key, "fitness: clip-score needs clip_model, a local folder with a CLIPModel and its processor")

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics a study computes: the search's, then the re-scoring one."""
        return (self.metric,) + ((self.rescore,) if self.rescore else ())
