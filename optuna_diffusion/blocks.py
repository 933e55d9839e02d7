"""Skippable blocks of a diffusers UNet, and the switch that skips or reuses them per step.

Block names are positional, so they are stable for a given architecture:

* ``down.1.resnet.0``, ``down.1.attn.0``, ``mid.resnet.1``, ``mid.attn.0``, ``up.0.resnet.2`` ...:
  single residual and attention blocks. Skipped, an attention block returns its input and a
  residual block returns its shortcut path (identity, or its 1x1 conv when channels change).
  Reused, either returns its output of the previous step.
* ``up.0``, ``up.1`` ...: a whole deep branch, as DeepCache caches it. Reusing ``up.i`` takes up
  block i's output of the previous step, so up blocks 0..i, the middle block and the down-path
  modules that feed only them are not computed at that step. The top level always runs.

:class:`BlockSwitch` installs one forward wrapper per block module (the model is not copied) and,
when it follows a :class:`~optuna_diffusion.plan.Plan`, picks each step's choices from the time step
the UNet is called with. With nothing chosen, every wrapper calls the original forward unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal

import torch
from torch import nn

from .errors import PlanError
from .plan import Plan

BlockKind = Literal["resnet", "attention", "branch"]


@dataclass(frozen=True)
class Block:
    """One choice the architecture search can make at a step.

    Attributes:
        name: stable name, e.g. ``"down.1.attn.0"`` or ``"up.0"``.
        kind: ``"resnet"``, ``"attention"`` or ``"branch"`` (a branch can only be reused).
        members: dotted module paths that do not run when the block is skipped or reused
            (one path for a single block; disjoint subtrees for a branch).
    """

    name: str
    kind: BlockKind
    members: tuple[str, ...]

    @property
    def actions(self) -> frozenset[str]:
        return frozenset({"reuse"}) if self.kind == "branch" else frozenset({"skip", "reuse"})


def _block_list(block: nn.Module, attr: str) -> list[nn.Module | None]:
    modules = getattr(block, attr, None)
    return list(modules) if modules is not None else []


def _single_blocks(prefix: str, path: str, block: nn.Module) -> list[Block]:
    found = []
    for j, resnet in enumerate(_block_list(block, "resnets")):
        if hasattr(resnet, "conv_shortcut") and not getattr(resnet, "up", False) and not getattr(resnet, "down", False):
            found.append(Block(f"{prefix}.resnet.{j}", "resnet", (f"{path}.resnets.{j}",)))
    for j, attention in enumerate(_block_list(block, "attentions")):
        if attention is not None:
            found.append(Block(f"{prefix}.attn.{j}", "attention", (f"{path}.attentions.{j}",)))
    return found


def _down_path(unet: nn.Module) -> list[tuple[str, int]]:
    """Down-path modules in execution order, each with how many skip entries it pushes."""
    path: list[tuple[str, int]] = []
    for k, block in enumerate(unet.down_blocks):
        resnets = _block_list(block, "resnets")
        attentions = _block_list(block, "attentions")
        for j in range(len(resnets)):
            path.append((f"down_blocks.{k}.resnets.{j}", 0))
            if j < len(attentions) and attentions[j] is not None:
                path.append((f"down_blocks.{k}.attentions.{j}", 0))
            path[-1] = (path[-1][0], 1)
        for j, _ in enumerate(_block_list(block, "downsamplers")):
            path.append((f"down_blocks.{k}.downsamplers.{j}", 1))
    return path


def _branch_blocks(unet: nn.Module) -> list[Block]:
    """DeepCache-style branches ``up.i`` for every up block but the top one."""
    blocks = list(unet.down_blocks) + list(unet.up_blocks)
    if getattr(unet, "mid_block", None) is None or any(hasattr(b, "skip_conv") for b in blocks):
        return []
    down_path = _down_path(unet)
    entries = 1 + sum(pushed for _, pushed in down_path)  # conv_in pushes the first entry
    branches = []
    consumed = 0
    for i, up_block in enumerate(list(unet.up_blocks)[:-1]):
        consumed += len(up_block.resnets)
        needed = entries - consumed - 1  # entries still needed after conv_in's
        keep = 0  # how many down-path modules must run to produce the needed entries
        while needed > 0:
            needed -= down_path[keep][1]
            keep += 1
        deep = [module for module, _ in down_path[keep:]]
        members = _collapse_to_blocks(deep, unet)
        members += ["mid_block"] + [f"up_blocks.{u}" for u in range(i + 1)]
        branches.append(Block(f"up.{i}", "branch", tuple(members)))
    return branches


def _collapse_to_blocks(module_paths: list[str], unet: nn.Module) -> list[str]:
    """Replace the paths of every module of a down block by the block's own path when all are listed."""
    collapsed: list[str] = []
    for k in range(len(unet.down_blocks)):
        prefix = f"down_blocks.{k}."
        inside = [p for p in module_paths if p.startswith(prefix)]
        all_modules = [p for p, _ in _down_path(unet) if p.startswith(prefix)]
        if inside and inside == all_modules:
            collapsed.append(f"down_blocks.{k}")
        else:
            collapsed.extend(inside)
    return collapsed


def find_blocks(unet: nn.Module) -> tuple[Block, ...]:
    """Every skippable or reusable block of a diffusers ``UNet2DModel`` / ``UNet2DConditionModel``."""
    if not hasattr(unet, "down_blocks") or not hasattr(unet, "up_blocks"):
        raise PlanError(f"{type(unet).__name__} is not a diffusers UNet (no down_blocks/up_blocks)")
    found: list[Block] = []
    for k, block in enumerate(unet.down_blocks):
        found += _single_blocks(f"down.{k}", f"down_blocks.{k}", block)
    if getattr(unet, "mid_block", None) is not None:
        found += _single_blocks("mid", "mid_block", unet.mid_block)
    for k, block in enumerate(unet.up_blocks):
        found += _single_blocks(f"up.{k}", f"up_blocks.{k}", block)
    return tuple(found) + tuple(_branch_blocks(unet))


def check_plan_blocks(plan: Plan, blocks: Iterable[Block]) -> None:
    """Raise :class:`PlanError` if ``plan`` names unknown blocks or choices a block does not allow."""
    by_name = {block.name: block for block in blocks}
    for step, (skipped, reused) in enumerate(zip(plan.skips, plan.reuses)):
        for name in sorted(skipped | reused):
            if name not in by_name:
                raise PlanError(f"unknown block {name!r} at step {step}; known blocks: {', '.join(by_name)}")
        for name in sorted(skipped):
            if "skip" not in by_name[name].actions:
                raise PlanError(f"block {name!r} can only be reused, not skipped (step {step})")
        branches = [by_name[n] for n in reused if by_name[n].kind == "branch"]
        for branch in branches:
            for name in sorted((skipped | reused) - {branch.name}):
                inner = by_name[name].members[0]
                if any(inner == m or inner.startswith(m + ".") for m in branch.members):
                    raise PlanError(f"block {name!r} lies inside branch {branch.name!r}, reused at step {step}")


def _attention_passthrough(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    hidden_states = args[0] if args else kwargs["hidden_states"]
    if isinstance(module, _plain_attention_type()):
        return hidden_states
    if kwargs.get("return_dict", True):
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=hidden_states)
    return (hidden_states,)


def _plain_attention_type() -> type:
    from diffusers.models.attention_processor import Attention

    return Attention


def _resnet_shortcut(module: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
    shortcut = args[0] if args else kwargs["input_tensor"]
    if module.conv_shortcut is not None:
        shortcut = module.conv_shortcut(shortcut.contiguous())
    return shortcut / module.output_scale_factor


Mode = Literal["run", "skip", "reuse"]


class _ModuleSwitch:
    """Replaces one module's forward: run it, stand its shortcut in, or return its last output."""

    def __init__(self, path: str, module: nn.Module, skip_forward: Any) -> None:
        self.path = path
        self.module = module
        self.skip_forward = skip_forward
        self.mode: Mode = "run"
        self.keep_output = False
        self.last_output: Any = None
        if isinstance(vars(module).get("forward"), _ModuleSwitch):
            raise PlanError(f"module {path} already has a block switch; remove it before installing another")
        self.original_forward = module.forward
        module.forward = self  # an instance attribute shadows the class's forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "reuse":
            if self.last_output is None:
                raise PlanError(f"module {self.path} is reused at a step that has no previous output")
            return self.last_output
        if self.mode == "skip":
            output = self.skip_forward(self.module, *args, **kwargs)
        else:
            output = self.original_forward(*args, **kwargs)
        self.last_output = output if self.keep_output else None
        return output

    def remove(self) -> None:
        del self.module.forward


class BlockSwitch:
    """Skips or reuses UNet blocks per denoising step, through forward wrappers on the blocks.

    Use :meth:`follow` to run a Plan: a forward pre-hook on the UNet reads the time step of every
    call and applies that step's choices. :meth:`remove` restores the model exactly.
    """

    def __init__(self, unet: nn.Module) -> None:
        self.unet = unet
        self.blocks = find_blocks(unet)
        self.by_name = {block.name: block for block in self.blocks}
        modules = dict(unet.named_modules())
        self._switches: dict[str, _ModuleSwitch] = {}
        for block in self.blocks:
            for path in block.members:
                if path not in self._switches:
                    self._switches[path] = _ModuleSwitch(path, modules[path], self._skip_forward_for(block))
        self._plan: Plan | None = None
        self._hook: Any = None

    @staticmethod
    def _skip_forward_for(block: Block) -> Any:
        return {"resnet": _resnet_shortcut, "attention": _attention_passthrough}.get(block.kind)

    def _member_paths(self, names: Iterable[str]) -> set[str]:
        return {path for name in names for path in self.by_name[name].members}

    def set_step(self, skip: Iterable[str] = (), reuse: Iterable[str] = (), keep: Iterable[str] = ()) -> None:
        """Choose what runs at the next UNet call; ``keep`` names blocks whose output a later step reuses."""
        skipped, reused, kept = self._member_paths(skip), self._member_paths(reuse), self._member_paths(keep)
        for path, switch in self._switches.items():
            switch.mode = "reuse" if path in reused else "skip" if path in skipped else "run"
            switch.keep_output = path in kept

    def clear(self) -> None:
        """Forget cached outputs (a new trajectory starts)."""
        for switch in self._switches.values():
            switch.last_output = None

    def follow(self, plan: Plan) -> "BlockSwitch":
        """Apply ``plan``'s per-step choices at each UNet call, found by the call's time step."""
        check_plan_blocks(plan, self.blocks)
        self._plan = plan
        if self._hook is None:
            self._hook = self.unet.register_forward_pre_hook(self._before_unet_call, with_kwargs=True)
        return self

    def _before_unet_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        plan = self._plan
        if plan is None or plan.is_full_network:
            self.set_step()
            return
        timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
        t = int(round(float(torch.as_tensor(timestep).flatten()[0])))
        if t not in plan.timesteps:
            raise PlanError(
                f"the UNet was called at t={t}, which is not a time step of the plan; "
                f"sample with timesteps={list(plan.timesteps)}"
            )
        step = plan.timesteps.index(t)
        if step == 0:
            self.clear()
        # Outputs are kept for every later reuse, so a block reused after a step where it did not run
        # (inside a reused branch) gets its last computed output.
        later_reuses = frozenset().union(*plan.reuses[step + 1 :])
        self.set_step(plan.skips[step], plan.reuses[step], later_reuses)

    def unfollow(self) -> None:
        """Stop following a plan: every block runs again."""
        self._plan = None
        self.set_step()
        self.clear()

    def remove(self) -> None:
        """Remove every wrapper and hook; the model is as before."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for switch in self._switches.values():
            switch.remove()
        self._switches.clear()

    def __enter__(self) -> "BlockSwitch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
