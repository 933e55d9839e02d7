"""Where and in what precision a model runs: ``--device`` (``auto`` by default) and ``[model] dtype``.

``auto`` is CUDA when torch sees a CUDA GPU, else Apple's MPS, else the CPU. A device that does not
exist on this machine (``cuda:7`` on a one-GPU box, ``tpu``) is a one-line :class:`ConfigError`.
The precision names are torch's: ``float32``, ``bfloat16``, ``float16`` (:data:`DTYPES`). The peak
accelerator memory of a trial is measured with ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats`` (CUDA only: other devices have no such counter, and the result is None).
"""

from __future__ import annotations

import torch

from .errors import ConfigError

AUTO = "auto"
"""The default ``--device``: CUDA if available, else MPS, else CPU."""

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The precisions a model can run in, by their ``[model] dtype`` name."""


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (a key of :data:`DTYPES`); a one-line ConfigError otherwise."""
    try:
        return DTYPES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}") from None


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device = AUTO) -> torch.device:
    """``device`` as a torch device that exists on this machine (``auto``: CUDA, else MPS, else CPU).

    Raises:
        ConfigError: an unknown device type, or a CUDA/MPS device this machine does not have.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not device.strip():
        raise ConfigError(f"device must be a name such as auto, cpu, cuda or cuda:1, got {device!r}")
    if device == AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {device!r} (try auto, cpu, cuda, cuda:N or mps)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU here")
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"device {device!r} does not exist: torch sees {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    elif parsed.type == "mps":
        if not _mps_available():
            raise ConfigError(f"device {device!r} asked for, but torch sees no MPS (Apple GPU) here")
    elif parsed.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported here (use auto, cpu, cuda, cuda:N or mps)")
    return parsed


def device_name(device: torch.device) -> str:
    """What ``device`` is, for the study's records: ``cpu``, ``mps`` or ``cuda:N (NVIDIA H100 ...)``."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring the peak allocated memory of ``device`` (CUDA only; a no-op elsewhere)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int | None:
    """Bytes allocated at the peak since :func:`reset_peak_memory` (CUDA only; None elsewhere)."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.max_memory_allocated(device))
