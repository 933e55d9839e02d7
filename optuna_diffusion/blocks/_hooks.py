"""The block switch's wrappers, each a diffusers ``ModelHook`` in the module's ``HookRegistry``.

Registering through diffusers' registry chains our hook with any other diffusers hook on the same
module (a user's, FirstBlockCache, layer skip ...), and removing it re-links the others, so a user's
hook registered before or after ours keeps running once the switch is gone.

Every block hook here replaces the forward (``new_forward``) and calls the rest of the chain through
``self.fn_ref.original_forward`` when the module runs. Each keeps its own cache (``reset_state``
clears it, so the registry's public ``reset_stateful_hooks()`` does too).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

from ..compat_diffusers import dropped_from_chain, forget_registry, forward_below, relink_replacing_hook
from ..errors import PlanError
from ._transformer import StreamLayout, Streams, minus, plus

HOOK_NAME = "optuna_diffusion.block_switch"

Mode = Literal["run", "skip", "reuse"]
BlockMode = Literal["run", "skip", "reuse", "tail", "pass"]


# --------------------------------------------------------------------------------------------------
# Registering and removing. diffusers 0.42's HookRegistry.remove_hook mis-links a chain around a hook
# that replaces the forward, and leaves an empty registry behind; the repairs rely on how register_hook
# links a chain, so they live in the fenced module optuna_diffusion.compat_diffusers.
# --------------------------------------------------------------------------------------------------


class Registration:
    """One of our hooks registered on one module; :meth:`remove` takes out ours alone."""

    def __init__(self, path: str, module: nn.Module, hook: ModelHook) -> None:
        existing = [value for value in vars(module).values() if isinstance(value, HookRegistry)]
        registry = HookRegistry.check_if_exists_or_initialize(module)
        if registry.get_hook(HOOK_NAME) is not None:
            raise PlanError(f"module {path or type(module).__name__} already has a block switch; remove it first")
        registry.register_hook(hook, HOOK_NAME)
        self.module = module
        self.registry = registry
        self.hook = hook
        self._created_registry = registry not in existing

    def relink_if_dropped(self) -> None:
        """Put our hook back in the chain if removing a hook registered before it dropped it.

        Removing such a hook (``model.disable_cache()`` after FirstBlockCache) re-links ours the way
        :func:`~optuna_diffusion.compat_diffusers.relink_replacing_hook` describes, so ours would silently
        stop switching this module.
        """
        if dropped_from_chain(self.hook):
            relink_replacing_hook(self.module, self.hook, self.hook.fn_ref.forward)

    def remove(self) -> None:
        names = list(self.registry.hooks)  # in registration order, as the registry chains them
        later = names[names.index(HOOK_NAME) + 1 :]
        below = forward_below(self.hook)
        self.registry.remove_hook(HOOK_NAME, recurse=False)
        if later:
            relink_replacing_hook(self.module, self.registry.hooks[later[0]], below)
        if self._created_registry and not self.registry.hooks:
            forget_registry(self.module, self.registry)


# --------------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------------


class StepHook(ModelHook):
    """On the denoiser itself: hands every call's arguments to the switch before the model runs."""

    def __init__(self, before_call: Callable[[tuple, dict], None]) -> None:
        super().__init__()
        self.before_call = before_call

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        self.before_call(args, kwargs)
        return args, kwargs


class ModeHook(ModelHook):
    """A module the switch runs, skips or reuses per step (its ``mode``), keeping its output when told.

    Subclasses say what a skip returns (:meth:`skip`) and what a reuse returns (:meth:`reuse`, default
    the kept output); ``what`` names the module in errors.
    """

    _is_stateful = True

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
        self.mode: Mode = "run"
        self.keep_output = False
        self.last_output: Any = None

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "reuse":
            if self.last_output is None:
                raise PlanError(f"{self.what} is reused at a step that has no previous output")
            return self.reuse(module, *args, **kwargs)
        if self.mode == "skip":
            return self.skip(module, *args, **kwargs)
        return self.kept(self.fn_ref.original_forward(*args, **kwargs))

    def kept(self, output: Any) -> Any:
        """``output``, kept for a later reuse when the switch asks."""
        self.last_output = output if self.keep_output else None
        return output

    def skip(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def reuse(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.last_output

    def reset_state(self, module: nn.Module) -> nn.Module:
        self.last_output = None
        return module


class UNetModuleHook(ModeHook):
    """A UNet block module: run it, stand its shortcut in, or return its last output (run or skipped)."""

    def __init__(self, path: str, skip_forward: Callable[..., Any] | None) -> None:
        super().__init__(f"module {path}")
        self.path = path
        self.skip_forward = skip_forward

    def skip(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.kept(self.skip_forward(module, *args, **kwargs))


ZERO_OUTPUT = object()
"""A sub-layer's last output when it never ran but was skipped (alone or with its block): zeros."""


class SubLayerHook(ModeHook):
    """A transformer sub-layer: run it, return zeros of its output's shape, or its output of the last run.

    Reused before it ever ran (it was only skipped, alone or with its whole block), it returns zeros
    again: the contribution it made then.
    """

    def __init__(self, name: str, zeros: Callable[..., Any]) -> None:
        super().__init__(f"block {name!r}")
        self.name = name
        self.zeros = zeros

    def skip(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        self.skipped()
        return self.zeros(module, *args, **kwargs)

    def reuse(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.zeros(module, *args, **kwargs) if self.last_output is ZERO_OUTPUT else self.last_output

    def skipped(self) -> None:
        """Note a step where the sub-layer contributed nothing (skipped, or its whole block skipped)."""
        if self.keep_output and self.last_output is None:
            self.last_output = ZERO_OUTPUT


class TailRecord:
    """A tail's combined residual (output of the network's last block minus input of its first block)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.keep = False
        self.residual: Streams | None = None


class CallState:
    """What one model call shares between block hooks: tails whose first block ran, with its input."""

    def __init__(self) -> None:
        self.open_tails: list[tuple[TailRecord, Streams]] = []


class TransformerBlockHook(ModelHook):
    """A whole transformer block.

    Modes: ``run``; ``skip`` (return the input streams); ``reuse`` (input + the block's residual of its
    last run, or zero if it was only ever skipped); ``tail`` (first block of a reused tail: input + the
    tail's residual); ``pass`` (inside a reused tail, after its first block: return the input streams,
    compute nothing).
    """

    _is_stateful = True

    def __init__(self, name: str, layout: StreamLayout, call: CallState, sub_layers: list[SubLayerHook]) -> None:
        super().__init__()
        self.name = name
        self.layout = layout
        self.call = call
        self.sub_layers = sub_layers
        self.mode: BlockMode = "run"
        self.keep_residual = False
        self.residual: Streams | None = None
        self.reused_tail: TailRecord | None = None  # in mode "tail"
        self.starts: TailRecord | None = None  # the tail that starts at this block, if any
        self.is_last = False

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        streams = self.layout.read(module, args, kwargs)
        if self.mode == "pass":
            output = self.layout.pack(module, streams)
        else:
            if self.starts is not None and self.starts.keep and self.mode != "tail":
                self.call.open_tails.append((self.starts, streams))
            output = self._forward(module, streams, args, kwargs)
        if self.is_last:
            final = self.layout.unpack(output)
            for record, start in self.call.open_tails:
                record.residual = minus(final, start)
            self.call.open_tails.clear()
        return output

    def _forward(self, module: nn.Module, streams: Streams, args: tuple, kwargs: dict) -> Any:
        if self.mode == "skip":
            if self.keep_residual and self.residual is None:
                self.residual = {}  # skipped before it ever ran: a later reuse adds nothing, as now
            for sub_layer in self.sub_layers:
                sub_layer.skipped()
            return self.layout.pack(module, streams)
        if self.mode == "reuse":
            if self.residual is None:
                raise PlanError(f"block {self.name!r} is reused at a step that has no previous output")
            return self.layout.pack(module, plus(streams, self.residual))
        if self.mode == "tail":
            tail = self.reused_tail
            assert tail is not None
            if tail.residual is None:
                raise PlanError(f"tail {tail.name!r} is reused at a step that has no previous output")
            return self.layout.pack(module, plus(streams, tail.residual))
        output = self.fn_ref.original_forward(*args, **kwargs)
        self.residual = minus(self.layout.unpack(output), streams) if self.keep_residual else None
        return output

    def reset_state(self, module: nn.Module) -> nn.Module:
        self.residual = None
        if self.starts is not None:
            self.starts.residual = None
        self.call.open_tails.clear()
        return module
