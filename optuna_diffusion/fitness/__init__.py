"""Fitness metrics a plan search minimises besides MACs: FID, CLIP score, or the distance to a teacher.

* :class:`FIDFitness`: FID in a feature network's space against reference statistics (the default);
* :class:`ClipScoreFitness`: ``-CLIPScore`` of images against their prompts, from a local CLIP folder;
* :class:`TeacherFitness`: ``-PSNR`` / ``1-SSIM`` of decoded images, or MSE of latents, against the
  same model's many-step samples of the same noise and prompts (generated once, kept in a
  :class:`TeacherStore` beside the study);
* :func:`rescore_front`: re-score a finished stage's Pareto front with another (costlier) metric.

Each is a :class:`FitnessMeter` a :class:`~optuna_diffusion.evaluation.PlanEvaluator` feeds batch by batch.
"""

from ._base import METRICS, FitnessMeter
from ._clip import ClipScoreFitness, load_clip
from ._fid import FIDFitness
from ._settings import FitnessSettings
from ._teacher import DISTANCES, TeacherFitness, TeacherStore, teacher_plan

__all__ = [
    "DISTANCES",
    "METRICS",
    "ClipScoreFitness",
    "FIDFitness",
    "FitnessMeter",
    "FitnessSettings",
    "TeacherFitness",
    "TeacherStore",
    "load_clip",
    "teacher_plan",
]
