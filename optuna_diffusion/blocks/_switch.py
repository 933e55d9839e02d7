"""The switch that skips or reuses a denoiser's blocks per step, and :func:`find_blocks`."""

from __future__ import annotations

import weakref
from typing import Any, Iterable

from torch import nn

from ..errors import PlanError
from ..plan import Plan
from ._block import Block, check_plan_blocks
from ._hooks import (
    CallState,
    Registration,
    StepHook,
    SubLayerHook,
    TailRecord,
    TransformerBlockHook,
    UNetModuleHook,
)
from ._timesteps import TimestepOf, default_timestep_of, plan_step
from ._transformer import SUPPORTED, TransformerLayout, is_transformer, transformer_layout
from ._unet import SKIP_FORWARD, find_unet_blocks, is_unet

_INSTALLED: "weakref.WeakKeyDictionary[nn.Module, BlockSwitch]" = weakref.WeakKeyDictionary()


def find_blocks(model: nn.Module) -> tuple[Block, ...]:
    """Every skippable or reusable block of a diffusers UNet or transformer denoiser.

    UNets (``UNet2DModel``, ``UNet2DConditionModel``): see :mod:`optuna_diffusion.blocks._unet`;
    transformers (DiT, PixArt, SD3, Flux): see :mod:`optuna_diffusion.blocks._transformer`.
    """
    if is_unet(model):
        return find_unet_blocks(model)
    if is_transformer(model):
        return transformer_layout(model).blocks
    raise PlanError(
        f"{type(model).__name__} is neither a diffusers UNet (no down_blocks/up_blocks) nor a supported "
        f"transformer ({SUPPORTED})"
    )


def installed_switch(model: nn.Module) -> "BlockSwitch | None":
    """The :class:`BlockSwitch` installed on ``model``, if any."""
    return _INSTALLED.get(model)


class BlockSwitch:
    """Skips or reuses a denoiser's blocks per step, through diffusers hooks on the blocks.

    Use :meth:`follow` to run a Plan: a hook on the model reads the time step of every call and
    applies that step's choices. :meth:`remove` takes out this switch's hooks alone and leaves the
    model as before (other diffusers hooks on the same modules keep running).

    Args:
        model: a diffusers UNet or supported transformer (the model is not copied).
        timestep_of: ``timestep_of(args, kwargs)`` returning a call's time step in plan units (a
            number or a tensor); default: the call's ``timestep`` argument, times 1000 for Flux
            (its pipeline passes ``t / 1000``). See :mod:`optuna_diffusion.blocks._timesteps`.
    """

    def __init__(self, model: nn.Module, *, timestep_of: TimestepOf | None = None) -> None:
        if installed_switch(model) is not None:
            raise PlanError(f"{type(model).__name__} already has a block switch; remove it before installing another")
        self.model = model
        self.blocks = find_blocks(model)
        self.by_name = {block.name: block for block in self.blocks}
        self._timestep_of = timestep_of
        self._plan: Plan | None = None
        self._registrations: list[Registration] = []
        # Per hookable path (UNet) or name (transformer): the hook that switches it.
        self._unet_hooks: dict[str, UNetModuleHook] = {}
        self._sub_hooks: dict[str, SubLayerHook] = {}
        self._block_hooks: dict[str, TransformerBlockHook] = {}
        self._tails: dict[str, TailRecord] = {}
        self._layout: TransformerLayout | None = None
        self._call_state = CallState()
        try:
            if is_unet(model):
                self._install_unet()
            else:
                self._install_transformer()
            self._register("", model, StepHook(self._before_call))
        except BaseException:
            self._unregister_all()
            raise
        _INSTALLED[model] = self

    @property
    def unet(self) -> nn.Module:
        """The model (the name predates transformer support)."""
        return self.model

    # Installing --------------------------------------------------------------------------------------

    def _register(self, path: str, module: nn.Module, hook: Any) -> None:
        self._registrations.append(Registration(path, module, hook))

    def _install_unet(self) -> None:
        modules = dict(self.model.named_modules())
        for block in self.blocks:
            for path in block.members:
                if path not in self._unet_hooks:
                    hook = UNetModuleHook(path, SKIP_FORWARD.get(block.kind))
                    self._register(path, modules[path], hook)
                    self._unet_hooks[path] = hook

    def _install_transformer(self) -> None:
        layout = transformer_layout(self.model)
        self._layout = layout
        self._tails = {name: TailRecord(name) for name in layout.tails}
        starts = {layout.sequence[index]: self._tails[name] for name, index in layout.tails.items()}
        for name, unit in layout.units.items():  # a block comes before its sub-layers
            path = unit.block.members[0]
            if unit.layout is not None:
                hook: Any = TransformerBlockHook(name, unit.layout, self._call_state, sub_layers=[])
                hook.starts = starts.get(name)
                hook.is_last = name == layout.sequence[-1]
                self._block_hooks[name] = hook
            else:
                hook = SubLayerHook(name, unit.zeros)
                self._sub_hooks[name] = hook
                self._block_hooks[name.rsplit(".", 1)[0]].sub_layers.append(hook)
            self._register(path, unit.module, hook)

    # Choosing ----------------------------------------------------------------------------------------

    def _member_paths(self, names: Iterable[str]) -> set[str]:
        return {path for name in names for path in self.by_name[name].members}

    def set_step(self, skip: Iterable[str] = (), reuse: Iterable[str] = (), keep: Iterable[str] = ()) -> None:
        """Choose what runs at the next model call; ``keep`` names blocks whose output a later step reuses."""
        skip, reuse, keep = set(skip), set(reuse), set(keep)
        unknown = sorted((skip | reuse | keep) - set(self.by_name))
        if unknown:
            raise PlanError(f"unknown block {unknown[0]!r}; known blocks: {', '.join(self.by_name)}")
        for name in sorted(skip):
            if "skip" not in self.by_name[name].actions:
                raise PlanError(f"block {name!r} can only be reused, not skipped")
        if self._layout is None:
            skipped, reused, kept = self._member_paths(skip), self._member_paths(reuse), self._member_paths(keep)
            for path, hook in self._unet_hooks.items():
                hook.mode = "reuse" if path in reused else "skip" if path in skipped else "run"
                hook.keep_output = path in kept
            return
        for name, hook in self._sub_hooks.items():
            hook.mode = "reuse" if name in reuse else "skip" if name in skip else "run"
            hook.keep_output = name in keep
        for name, record in self._tails.items():
            record.keep = name in keep
        sequence = self._layout.sequence
        reused_tails = [name for name in self._layout.tails if name in reuse]
        first_tail = min(reused_tails, key=self._layout.tails.__getitem__, default=None)
        tail_start = self._layout.tails[first_tail] if first_tail is not None else len(sequence)
        for index, name in enumerate(sequence):
            hook = self._block_hooks[name]
            hook.keep_residual = name in keep
            hook.reused_tail = self._tails[first_tail] if index == tail_start else None  # type: ignore[index]
            if index > tail_start:
                hook.mode = "pass"
            elif index == tail_start:
                hook.mode = "tail"
            else:
                hook.mode = "reuse" if name in reuse else "skip" if name in skip else "run"
        self._call_state.open_tails.clear()

    def active_paths(self) -> list[str]:
        """Module paths the current choices skip, reuse or pass over (empty: the full network runs)."""
        if self._layout is None:
            return [path for path, hook in self._unet_hooks.items() if hook.mode != "run"]
        hooks = {**self._block_hooks, **self._sub_hooks}
        return [self.by_name[name].members[0] for name, hook in hooks.items() if hook.mode != "run"]

    def clear(self) -> None:
        """Forget cached outputs and residuals (a new trajectory starts)."""
        for hook in self._unet_hooks.values():
            hook.last_output = None
        for hook in self._sub_hooks.values():
            hook.last_output = None
        for hook in self._block_hooks.values():
            hook.residual = None
        for record in self._tails.values():
            record.residual = None
        self._call_state.open_tails.clear()

    # Following a plan --------------------------------------------------------------------------------

    def follow(self, plan: Plan) -> "BlockSwitch":
        """Apply ``plan``'s per-step choices at each model call, found by the call's time step."""
        check_plan_blocks(plan, self.blocks)
        if self._timestep_of is None and not plan.is_full_network:
            self._timestep_of = default_timestep_of(self.model)
        self._plan = plan
        return self

    def _before_call(self, args: tuple, kwargs: dict) -> None:
        for registration in self._registrations:
            registration.relink_if_dropped()
        plan = self._plan
        self._call_state.open_tails.clear()  # left over only if a previous call raised
        if plan is None:
            return
        if plan.is_full_network:
            self.set_step()
            return
        assert self._timestep_of is not None
        step = plan_step(plan, self._timestep_of(args, kwargs), type(self.model).__name__)
        if step == 0:
            self.clear()
        # Outputs are kept for every later reuse, so a block reused after a step where it did not run
        # (inside a reused branch or tail) gets its last computed output.
        later_reuses = frozenset().union(*plan.reuses[step + 1 :])
        self.set_step(plan.skips[step], plan.reuses[step], later_reuses)

    def unfollow(self) -> None:
        """Stop following a plan: every block runs again."""
        self._plan = None
        self.set_step()
        self.clear()

    # Removing ----------------------------------------------------------------------------------------

    def _unregister_all(self) -> None:
        for registration in reversed(self._registrations):
            registration.remove()
        self._registrations.clear()

    def remove(self) -> None:
        """Remove this switch's hooks (and only them); the model is as before."""
        if installed_switch(self.model) is not self:
            return
        self._plan = None
        # A diffusers hook with new_forward registered after ours keeps calling ours through the reference
        # it captured (remove_hook re-links fn_ref.forward, not original_forward): in "run" mode ours passes
        # every call through.
        self.set_step()
        self.clear()
        self._unregister_all()
        del _INSTALLED[self.model]

    def __enter__(self) -> "BlockSwitch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
