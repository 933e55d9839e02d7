"""A picture of a search: FID (log axis) against MACs, stage fronts beside the hand-designed schedules.

``optuna-diffusion plot`` writes the figure twice: interactive HTML with plotly (a dependency already,
through ``optuna.visualization``) and a PNG with matplotlib (the ``plot`` extra). The figure reads only
the stored studies: each stage's Pareto front, every evaluated plan faintly behind it, and the
baselines whose FIDs stage 1 stored (:data:`~optuna_diffusion.trial_plan.BASELINE_FIDS_ATTR`), placed
at the MACs of a full-network plan with as many steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .errors import ConfigError
from .front import FrontRow, fully_scored, pareto_front
from .trial_plan import BASELINE_FIDS_ATTR, plan_from_trial

STAGE_LABELS = {"timesteps": "stage 1 (time steps)", "architecture": "stage 2 (skips and reuses)"}
_STAGE_COLOURS = {"timesteps": "#1f77b4", "architecture": "#d62728"}
_BASELINE_MARKERS = "sD^v<>ph"


@dataclass
class Baseline:
    """A hand-designed schedule at one K: its name, FID and the MACs a full-network K-step plan spends."""

    name: str
    steps: int
    fid: float
    macs: float


@dataclass
class FrontFigure:
    """What the figure shows, read from the stored studies."""

    title: str
    fronts: dict[str, list[FrontRow]] = field(default_factory=dict)
    evaluated: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (MACs, FID) per stage
    baselines: list[Baseline] = field(default_factory=list)


def _finite_full_fidelity(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [trial for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if fully_scored(trial)]


def _baselines(timestep_study: optuna.Study) -> list[Baseline]:
    full_network_macs: dict[int, float] = {}
    for trial in _finite_full_fidelity(timestep_study):
        full_network_macs.setdefault(plan_from_trial(trial).num_steps, trial.values[1])
    baselines = []
    for steps, fids in sorted((timestep_study.user_attrs.get(BASELINE_FIDS_ATTR) or {}).items(), key=lambda kv: int(kv[0])):
        macs = full_network_macs.get(int(steps))
        for name, fid in fids.items():
            if macs is not None and fid is not None and math.isfinite(fid):
                baselines.append(Baseline(name, int(steps), float(fid), macs))
    return baselines


def front_figure(studies: dict[str, optuna.Study], title: str) -> FrontFigure:
    """The figure's content from the stage studies that exist (``{"timesteps": study, ...}``)."""
    if not studies:
        raise ConfigError("nothing to plot: the study has no stored stage; run optuna-diffusion optimize first")
    figure = FrontFigure(title=title)
    for stage, study in studies.items():
        trials = _finite_full_fidelity(study)
        figure.evaluated[stage] = [(t.values[1], t.values[0]) for t in trials]
        figure.fronts[stage] = pareto_front(study)
    if "timesteps" in studies:
        figure.baselines = _baselines(studies["timesteps"])
    if not any(figure.evaluated.values()):
        raise ConfigError("nothing to plot: no trial of the study has completed yet")
    return figure


def write_html(figure: FrontFigure, path: Path) -> None:
    """The interactive figure (hover shows trial, steps and plan)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for stage, points in figure.evaluated.items():
        fig.add_trace(go.Scatter(
            x=[macs / 1e9 for macs, _ in points], y=[fid for _, fid in points], mode="markers",
            name=f"{STAGE_LABELS[stage]}: evaluated", opacity=0.25, marker=dict(color=_STAGE_COLOURS[stage], size=5),
        ))
    for stage, rows in figure.fronts.items():
        fig.add_trace(go.Scatter(
            x=[row.macs / 1e9 for row in rows], y=[row.fid for row in rows], mode="lines+markers",
            name=f"{STAGE_LABELS[stage]}: front", line=dict(color=_STAGE_COLOURS[stage], shape="hv"),
            text=[f"trial {row.number}, {row.plan.num_steps} steps<br>{row.plan}" for row in rows], hoverinfo="text+x+y",
        ))
    for index, name in enumerate(sorted({b.name for b in figure.baselines})):
        points = [b for b in figure.baselines if b.name == name]
        fig.add_trace(go.Scatter(
            x=[b.macs / 1e9 for b in points], y=[b.fid for b in points], mode="markers", name=f"baseline: {name}",
            marker=dict(symbol=index + 1, size=9, color="black"), text=[f"{name}, {b.steps} steps" for b in points],
            hoverinfo="text+x+y",
        ))
    fig.update_layout(title=figure.title, xaxis_title="GMACs per image", yaxis_title="FID", yaxis_type="log")
    fig.write_html(path, include_plotlyjs=True)


def write_png(figure: FrontFigure, path: Path) -> None:
    """The static figure; needs matplotlib (``pip install matplotlib``)."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError('a PNG needs matplotlib: pip install matplotlib (or --html-only)') from None
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for stage, points in figure.evaluated.items():
        ax.scatter([m / 1e9 for m, _ in points], [f for _, f in points], s=6, alpha=0.2, color=_STAGE_COLOURS[stage])
    for stage, rows in figure.fronts.items():
        ax.step([r.macs / 1e9 for r in rows], [r.fid for r in rows], where="post", color=_STAGE_COLOURS[stage],
                marker="o", markersize=3, label=f"{STAGE_LABELS[stage]} front")
    for index, name in enumerate(sorted({b.name for b in figure.baselines})):
        points = [b for b in figure.baselines if b.name == name]
        ax.scatter([b.macs / 1e9 for b in points], [b.fid for b in points], marker=_BASELINE_MARKERS[index % len(_BASELINE_MARKERS)],
                   facecolors="none", edgecolors="black", label=f"baseline: {name}")
    ax.set_yscale("log")
    ax.set_xlabel("GMACs per image")
    ax.set_ylabel("FID (log)")
    ax.set_title(figure.title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
