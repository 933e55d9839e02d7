"""The one place that uses private API of torch, each use with the public alternative it lacks.

Checked against torch 2.13.0; ``tests/test_private_api.py`` exercises every function here, so a torch
release that moves one fails a test instead of changing a count. Nothing here falls back quietly.
"""

from __future__ import annotations

import torch

from .errors import OptunaDiffusionError, first_line


def computed_in_trace(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is computed in the running JIT trace (not a constant, such as a cached output).

    PRIVATE torch API: ``torch._C._get_value_trace``. Public alternative lacking: torch has no public way
    to ask whether a tensor is a value of the running trace (``torch.jit.is_tracing()`` only says that a
    trace runs). When the call is gone or fails this raises: answering False instead would let the tracer
    drop the work of every module whose output is discarded, and MACs counts would silently come out too low.
    """
    get_value_trace = getattr(torch._C, "_get_value_trace", None)
    if get_value_trace is None:
        raise OptunaDiffusionError(
            f"torch {torch.__version__} has no torch._C._get_value_trace, which MACs counting needs to keep "
            "discarded work in the trace; use a torch version that has it"
        )
    try:
        return get_value_trace(tensor).node().kind() != "prim::Constant"
    except (AttributeError, RuntimeError) as error:
        raise OptunaDiffusionError(
            f"MACs counting could not read a tensor's JIT trace with torch {torch.__version__}: {first_line(error)}"
        ) from error
