"""Out-of-memory errors of any accelerator, told apart from other errors, and the memory they leave behind.

torch 2.13 raises ``torch.OutOfMemoryError`` (the same class as ``torch.cuda.OutOfMemoryError``) when a
CUDA allocation fails; the MPS, XPU and other backends raise a plain ``RuntimeError`` whose message says
"out of memory". :func:`is_out_of_memory` recognises both, so a batch that does not fit can be retried
at half size (:class:`~optuna_diffusion.evaluation.PlanEvaluator`).
"""

from __future__ import annotations

import gc

import torch


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an accelerator (or CPU allocator) running out of memory."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def release_memory() -> None:
    """Return cached blocks to the device after an out-of-memory error, so a smaller batch can fit."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()
