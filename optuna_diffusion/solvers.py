"""Few-step solvers for arbitrary time-step sequences, on DDPM-style and flow-matching schedules.

Every solver is one :class:`SolverRecord` of :data:`SOLVER_RECORDS` (its kind, whether the search picks it,
the diffusers scheduler that runs it in a pipeline); :data:`SOLVERS`, :data:`SOLVER_KINDS` and
:data:`DISTINCT_SOLVERS` are views of that table. Every solver has one signature,
``solver(denoise, x_T, timesteps, schedule, generator) -> x_0``, and runs on one kind of schedule
(checked by :func:`check_solver`):

* DDPM-style (:class:`NoiseSchedule`): ``ddim``, ``dpmpp-2m``, ``euler``, ``ddpm``, ``unipc``;
  ``denoise(x_t, t)`` returns the noise prediction epsilon (guidance, learned-variance channels,
  v-prediction and x0 clipping are already handled by the denoiser). The last update jumps to x0
  (alpha = 1).
* flow matching (:class:`FlowSchedule`, ``sigma = t / T``): ``flow-euler``, ``flow-dpmpp-2m``,
  ``flow-unipc``; ``denoise(x_t, t)`` returns the velocity ``v = noise - x0`` (the raw model output
  after guidance), and ``t`` is the model's own timestep, ``sigma * T``. The last update goes to sigma = 0.

The schedule is plain data, so solvers of one kind are interchangeable. Every solver calls
``denoise`` once per time step, and its input at step i depends only on time steps 0..i, not on the
steps after them or their number (multistep solvers lower their order only in the last update); the
prefix cache relies on both. Heun-type solvers call the model twice per step and are left out.

The solvers other than DDIM drive diffusers' own schedulers. ``DPMSolverMultistepScheduler`` with
flow sigmas and ``UniPCMultistepScheduler`` take no custom time steps (the first ignores
``timesteps=`` under ``use_flow_sigmas``, the second takes ``sigmas=`` only for flow and casts
``sigma * T`` down to an integer, so ``sigma = 1`` is fed to the model as ``t = T - 1``): for them
:func:`~optuna_diffusion.compat_diffusers.install_schedule` (the fenced write of a scheduler's state)
sets the plan's exact sigmas and time steps on the scheduler.

Precision. ``x`` and the denoiser's output arrive in the model's dtype (float32, bfloat16 or float16), as
a pipeline hands its latents and ``noise_pred`` to ``scheduler.step``, and each solver returns ``x`` in that
dtype. Where the arithmetic runs is diffusers' choice, kept so that results equal the pipelines': DDIM
(:func:`ddim_step`), ``euler`` and ``flow-euler`` compute each update in float32 (``EulerDiscreteScheduler``
and ``FlowMatchEulerDiscreteScheduler`` upcast the sample); DPM-Solver++ turns the model output into x0 in
the model's dtype and takes the step in float32; UniPC and ancestral ``ddpm`` compute in the sample's dtype,
against float32 schedule tables. The schedule itself (alphas, sigmas) is always float32 or float64.

Notation (DDIM paper, Song et al. 2021, eq. 12 with sigma = 0):
    alpha_prod_t       cumulative product of (1 - beta) up to t ("alpha_t" in the paper)
    x0_pred            (x_t - sqrt(1 - alpha_prod_t) * eps) / sqrt(alpha_prod_t)
    x_prev             sqrt(alpha_prod_t_prev) * x0_pred + sqrt(1 - alpha_prod_t_prev) * eps
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import diffusers
import numpy as np
import torch

from .compat_diffusers import install_schedule
from .errors import ConfigError
from .schedules import FlowSchedule, NoiseSchedule, schedule_from_config

__all__ = [
    "Denoise",
    "FlowSchedule",
    "NoiseSchedule",
    "SOLVERS",
    "SOLVER_KINDS",
    "SOLVER_RECORDS",
    "SolverRecord",
    "DISTINCT_SOLVERS",
    "SEARCH",
    "check_solver",
    "get_solver",
    "schedule_from_config",
    "searched_solvers",
    "solvers_for",
]

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Schedule = NoiseSchedule | FlowSchedule


def _expect(schedule: Schedule, kind: type, solver: str) -> None:
    if not isinstance(schedule, kind):
        raise ConfigError(f"solver {solver!r} runs on {_KIND_NAMES[kind.kind]} models, got a {type(schedule).__name__}")


def ddim_step(
    x_t: torch.Tensor, eps: torch.Tensor, alpha_prod_t: torch.Tensor, alpha_prod_t_prev: torch.Tensor
) -> torch.Tensor:
    """One deterministic DDIM update (eta = 0) between any two noise levels, computed in float32."""
    dtype = x_t.dtype
    x_t, eps = x_t.float(), eps.float()
    alpha_prod_t, alpha_prod_t_prev = alpha_prod_t.float(), alpha_prod_t_prev.float()
    # 1. predicted x0 (eq. 12, "predicted x0")
    x0_pred = (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    # 2. direction pointing to x_t and the update (eq. 12 with sigma_t = 0)
    x_prev = alpha_prod_t_prev.sqrt() * x0_pred + (1 - alpha_prod_t_prev).sqrt() * eps
    return x_prev.to(dtype)


def sample_ddim(
    denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021) over any decreasing time steps; the last update jumps to x0."""
    _expect(schedule, NoiseSchedule, "ddim")
    one = torch.ones((), dtype=torch.float64)
    for i, t in enumerate(timesteps):
        eps = denoise(x, torch.tensor(t, device=x.device))
        alpha_prod_t_prev = schedule.alpha_prod(timesteps[i + 1]) if i + 1 < len(timesteps) else one
        x = ddim_step(x, eps, schedule.alpha_prod(t), alpha_prod_t_prev)
    return x


def _run_scheduler(scheduler: Any, denoise: Denoise, x: torch.Tensor, **step_kwargs: Any) -> torch.Tensor:
    """Diffusers' own sampling loop over a scheduler whose time steps are set."""
    x = x * getattr(scheduler, "init_noise_sigma", 1.0)
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        x = scheduler.step(denoise(model_input, t), t, x, **step_kwargs).prev_sample
    return x


def _run_diffusers_scheduler(
    scheduler: Any, denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], **step_kwargs: Any
) -> torch.Tensor:
    """Drive a diffusers scheduler that takes custom ``timesteps=``; the model is asked for epsilon."""
    scheduler.set_timesteps(timesteps=list(timesteps), device=x.device)
    return _run_scheduler(scheduler, denoise, x, **step_kwargs)


def _scheduler_config(schedule: NoiseSchedule, **overrides: Any) -> dict[str, Any]:
    # The engine's own settings, not export's: the engine's denoiser always returns epsilon and clips x0
    # itself, where a pipeline's scheduler keeps its model's prediction type.
    return {**schedule.config, "prediction_type": "epsilon", "clip_sample": False, "thresholding": False, **overrides}


def _engine_scheduler(name: str, schedule: NoiseSchedule) -> Any:
    """The solver's diffusers scheduler (its record's class and settings) on the engine's schedule config."""
    record = SOLVER_RECORDS[name]
    return record.scheduler_class().from_config(_scheduler_config(schedule, **record.scheduler_settings))


def sample_dpmpp_2m(
    denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022) through diffusers' ``DPMSolverMultistepScheduler``."""
    _expect(schedule, NoiseSchedule, "dpmpp-2m")
    return _run_diffusers_scheduler(_engine_scheduler("dpmpp-2m", schedule), denoise, x, timesteps)


def sample_euler(
    denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022) via ``EulerDiscreteScheduler``.

    Linspace spacing, as in k-diffusion: the initial noise is scaled to ``sigma_max`` of the first step,
    i.e. ``x_T = sqrt(1 - alpha_prod_t0) * noise`` in DDIM's variables. The updates are DDIM's, so this
    equals DDIM started from that scaled noise, not DDIM (close only when the first step is near T).
    """
    _expect(schedule, NoiseSchedule, "euler")
    return _run_diffusers_scheduler(_engine_scheduler("euler", schedule), denoise, x, timesteps)


def sample_ddpm(
    denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020) via ``DDPMScheduler``; stochastic, seeded by ``generator``.

    A denoiser that carries ``classifier_gradient(x_t, t)`` (classifier guidance) shifts each step's
    mean by the step's variance times that gradient, as guided-diffusion's ``condition_mean`` does
    (the variance is the scheduler's ``fixed_small`` posterior variance between the plan's steps).
    """
    _expect(schedule, NoiseSchedule, "ddpm")
    scheduler = _engine_scheduler("ddpm", schedule)
    gradient = getattr(denoise, "classifier_gradient", None)
    if gradient is None:
        return _run_diffusers_scheduler(scheduler, denoise, x, timesteps, generator=generator)
    scheduler.set_timesteps(timesteps=list(timesteps), device=x.device)
    one = torch.ones((), dtype=torch.float64)
    for i, t in enumerate(scheduler.timesteps):
        x_t = x
        x = scheduler.step(denoise(x_t, t), t, x_t, generator=generator).prev_sample
        # 1. posterior variance between t and the next plan step (beta-tilde, "fixed_small")
        alpha_prod_t = schedule.alpha_prod(int(t))
        alpha_prod_t_prev = schedule.alpha_prod(timesteps[i + 1]) if i + 1 < len(timesteps) else one
        beta_t = 1 - alpha_prod_t / alpha_prod_t_prev
        variance = ((1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * beta_t).clamp(min=1e-20)
        # 2. the guided mean: mean + variance * grad log p(y | x_t); the noise was already added
        x = x + (variance.float() * gradient(x_t, t).float()).to(x.dtype)
    return x


def sample_unipc(
    denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """UniPC (Zhao et al. 2023; order 2, BH2, data prediction) via ``UniPCMultistepScheduler``.

    Its ``set_timesteps`` has no custom time steps for DDPM-style schedules: the plan's steps and their
    sigmas ``sqrt((1 - alpha_prod_t) / alpha_prod_t)`` (what ``set_timesteps`` reads off the same table)
    are installed on it.
    """
    from diffusers import UniPCMultistepScheduler

    _expect(schedule, NoiseSchedule, "unipc")
    config = _scheduler_config(schedule, solver_order=2, solver_type="bh2", predict_x0=True, final_sigmas_type="zero",
                               use_flow_sigmas=False, use_karras_sigmas=False, use_exponential_sigmas=False,
                               use_beta_sigmas=False, use_dynamic_shifting=False, lower_order_final=True,
                               disable_corrector=[], solver_p=None)
    scheduler = UniPCMultistepScheduler.from_config(config)
    scheduler.set_timesteps(len(timesteps), device=x.device)
    table = ((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod) ** 0.5
    install_schedule(scheduler, timesteps, [float(table[int(t)]) for t in timesteps])
    return _run_scheduler(scheduler, denoise, x)


def sample_flow_euler(
    denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], schedule: FlowSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Euler on the flow ODE, ``x <- x + (sigma_next - sigma) v``, via ``FlowMatchEulerDiscreteScheduler``.

    Driven with shift 1 and no dynamic shifting, so ``set_timesteps(sigmas=...)`` keeps the plan's
    sigmas ``t / T`` as they are; the model sees the scheduler's timesteps ``sigma * T`` (float32).
    """
    _expect(schedule, FlowSchedule, "flow-euler")
    record = SOLVER_RECORDS["flow-euler"]
    scheduler = record.scheduler_class()(num_train_timesteps=schedule.num_train_timesteps, shift=1.0,
                                         **record.scheduler_settings)
    scheduler.set_timesteps(sigmas=schedule.sigmas(timesteps), device=x.device)
    return _run_scheduler(scheduler, denoise, x)


def _flow_multistep_config(schedule: FlowSchedule, **overrides: Any) -> dict[str, Any]:
    return dict(num_train_timesteps=schedule.num_train_timesteps, use_flow_sigmas=True, flow_shift=1.0,
                prediction_type="flow_prediction", solver_order=2, final_sigmas_type="zero", lower_order_final=True,
                use_dynamic_shifting=False, **overrides)


def sample_flow_dpmpp_2m(
    denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], schedule: FlowSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) on flow sigmas (``alpha = 1 - sigma``) via ``DPMSolverMultistepScheduler``.

    With ``use_flow_sigmas`` its ``set_timesteps`` makes its own evenly spaced sigmas whatever it is
    given, so the plan's sigmas ``t / T`` and time steps are installed on it.
    """
    from diffusers import DPMSolverMultistepScheduler

    _expect(schedule, FlowSchedule, "flow-dpmpp-2m")
    sigmas = schedule.sigmas(timesteps)
    scheduler = DPMSolverMultistepScheduler(**_flow_multistep_config(schedule, algorithm_type="dpmsolver++"))
    scheduler.set_timesteps(len(timesteps), device=x.device)
    install_schedule(scheduler, timesteps, sigmas)
    return _run_scheduler(scheduler, denoise, x)


def sample_flow_unipc(
    denoise: Denoise, x: torch.Tensor, timesteps: Sequence[int], schedule: FlowSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """UniPC (order 2, BH2) on flow sigmas via ``UniPCMultistepScheduler(use_flow_sigmas=True)``.

    ``set_timesteps(sigmas=...)`` (shift 1) keeps the plan's sigmas, except that it lowers a first sigma
    of 1 by 1e-6 (its log-SNR would be -inf); the plan's integer time steps replace its
    ``int(sigma * T)``, which would feed ``t = T - 1`` to the model at sigma = 1.
    """
    from diffusers import UniPCMultistepScheduler

    _expect(schedule, FlowSchedule, "flow-unipc")
    scheduler = UniPCMultistepScheduler(**_flow_multistep_config(schedule, solver_type="bh2", predict_x0=True))
    # A numpy array: UniPC's set_timesteps multiplies ``sigmas`` by a float, which a list does not allow.
    scheduler.set_timesteps(sigmas=np.asarray(schedule.sigmas(timesteps), dtype=np.float64), device=x.device)
    install_schedule(scheduler, timesteps)
    return _run_scheduler(scheduler, denoise, x)


_KIND_NAMES = {"ddpm": "DDPM-style (variance-preserving)", "flow": "flow-matching"}


@dataclass(frozen=True)
class SolverRecord:
    """One solver: everything sampling, the search, export, ``apply`` and the CLI know about it.

    Attributes:
        name: the solver's name in settings, plans and the CLI.
        kind: the schedule kind it runs on (``schedule.kind``: ``"ddpm"`` or ``"flow"``).
        run: the sampling function, ``run(denoise, x_T, timesteps, schedule, generator) -> x_0``.
        searchable: whether ``solver = "search"`` chooses among it (:data:`DISTINCT_SOLVERS`).
        scheduler: the diffusers scheduler class (by name) that runs the solver in a pipeline on a plan's
            time steps (:func:`~optuna_diffusion.pipelines.scheduler_for_solver`); None where no diffusers
            scheduler keeps a plan's time steps (the solver is not exportable).
        scheduler_settings: the config settings that make ``scheduler`` run this solver. The engine's
            sampling function drives the same scheduler with the same settings where it uses one
            (``dpmpp-2m``, ``euler``, ``ddpm``, ``flow-euler``; DDIM is the engine's own update), on top
            of its own epsilon-prediction, no-clipping config; export sets them on the pipeline's config.
    """

    name: str
    kind: str
    run: Callable[..., torch.Tensor]
    searchable: bool
    scheduler: str | None = None
    scheduler_settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exportable(self) -> bool:
        """Whether a pipeline's scheduler can run this solver on a plan's time steps."""
        return self.scheduler is not None

    def scheduler_class(self) -> type:
        """The diffusers class of :attr:`scheduler`; a one-line ConfigError when the solver has none."""
        if self.scheduler is None:
            raise ConfigError(f"no diffusers scheduler runs solver {self.name!r} on a plan's time steps")
        return getattr(diffusers, self.scheduler)


# Not searchable: ``euler``, whose update on a DDPM-style schedule is DDIM's (both are Euler's method in
# sigma = sqrt((1 - alpha_prod) / alpha_prod) and x / sqrt(alpha_prod)) but which is not DDIM: as
# EulerDiscreteScheduler with linspace spacing it starts from x_T = sqrt(1 - alpha_prod_t0) * noise
# (init_noise_sigma = sigma_max), where DDIM starts from the noise itself, so it equals DDIM begun
# from that scaled noise and differs from DDIM more the further the first step is from T
# (tests/test_solvers.py); searching it would mostly search that scale. Also not searchable: the
# ancestral ``ddpm``, whose noise makes it poor at few steps. UniPC and flow DPM-Solver are not
# exportable: their schedulers do not keep a plan's time steps (the engine installs them, see above).
_DPM_SOLVER = "DPMSolverMultistepScheduler"
SOLVER_RECORDS: dict[str, SolverRecord] = {record.name: record for record in (
    # first-order DPM-Solver++ is DDIM
    SolverRecord("ddim", "ddpm", sample_ddim, True, _DPM_SOLVER, dict(
        algorithm_type="dpmsolver++", solver_order=1, final_sigmas_type="zero", thresholding=False)),
    SolverRecord("dpmpp-2m", "ddpm", sample_dpmpp_2m, True, _DPM_SOLVER, dict(
        algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero", thresholding=False)),
    SolverRecord("euler", "ddpm", sample_euler, False, "EulerDiscreteScheduler", dict(
        final_sigmas_type="zero", timestep_spacing="linspace")),
    SolverRecord("ddpm", "ddpm", sample_ddpm, False, "DDPMScheduler", dict(
        variance_type="fixed_small", clip_sample=False, thresholding=False)),
    SolverRecord("unipc", "ddpm", sample_unipc, True),
    SolverRecord("flow-euler", "flow", sample_flow_euler, True, "FlowMatchEulerDiscreteScheduler", dict(
        stochastic_sampling=False)),
    SolverRecord("flow-dpmpp-2m", "flow", sample_flow_dpmpp_2m, True),
    SolverRecord("flow-unipc", "flow", sample_flow_unipc, True),
)}
"""Every solver's record, by name; the tables below are views of it."""

SOLVERS: dict[str, Callable[..., torch.Tensor]] = {name: r.run for name, r in SOLVER_RECORDS.items()}
"""The sampling function of each solver."""
SOLVER_KINDS: dict[str, str] = {name: r.kind for name, r in SOLVER_RECORDS.items()}
"""The schedule kind (``schedule.kind``) each solver runs on."""

SEARCH = "search"
"""The solver setting that lets the search choose among :data:`DISTINCT_SOLVERS` of the model's kind."""

DISTINCT_SOLVERS: dict[str, tuple[str, ...]] = {
    kind: tuple(r.name for r in SOLVER_RECORDS.values() if r.kind == kind and r.searchable) for kind in _KIND_NAMES
}
"""The searchable solvers of each kind, in table order (the first is a search's default): the deterministic
ones that sample differently on the same time steps."""


def get_solver(name: str) -> Callable[..., torch.Tensor]:
    """The solver called ``name`` (one of :data:`SOLVERS`)."""
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}") from None


def solvers_for(kind: str) -> list[str]:
    """Names of the solvers that run on schedules of ``kind`` (``"ddpm"`` or ``"flow"``)."""
    if kind not in _KIND_NAMES:
        raise ConfigError(f"unknown schedule kind {kind!r}; choose one of {', '.join(_KIND_NAMES)}")
    return [name for name, solver_kind in SOLVER_KINDS.items() if solver_kind == kind]


def searched_solvers(choice: str | tuple[str, ...], kind: str) -> tuple[str, ...]:
    """The solvers a ``[sampling] solver`` setting allows on a schedule of ``kind``, the study's default first.

    ``"search"``: :data:`DISTINCT_SOLVERS` of the kind; a name: that solver alone; a tuple: those solvers.
    A solver of the other kind is a one-line ConfigError.
    """
    if kind not in _KIND_NAMES:
        raise ConfigError(f"unknown schedule kind {kind!r}; choose one of {', '.join(_KIND_NAMES)}")
    names = DISTINCT_SOLVERS[kind] if choice == SEARCH else (choice,) if isinstance(choice, str) else tuple(choice)
    for name in names:
        get_solver(name)
        _check_kind(name, kind)
    return names


def check_solver(name: str, schedule: Schedule) -> Callable[..., torch.Tensor]:
    """The solver called ``name``, after checking it runs on ``schedule``'s kind; a one-line ConfigError if not."""
    solver = get_solver(name)
    _check_kind(name, schedule.kind)
    return solver


def _check_kind(name: str, kind: str) -> None:
    if SOLVER_KINDS[name] != kind:
        raise ConfigError(
            f"solver {name!r} runs on {_KIND_NAMES[SOLVER_KINDS[name]]} models, but this model has a "
            f"{_KIND_NAMES[kind]} schedule; choose one of {', '.join(solvers_for(kind))}"
        )
