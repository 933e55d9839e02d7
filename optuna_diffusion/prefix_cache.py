"""A memory-bounded LRU cache of denoiser outputs, keyed by trajectory prefix.

With common random numbers, two plans that share their first time steps and block choices reach
bit-identical states there, so the denoiser outputs of those steps can be served from memory
instead of running the UNet again. :class:`~optuna_diffusion.generation.ImageGenerator` builds the keys;
this module only stores tensors and bounds their memory.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Sequence

import torch

from .errors import ConfigError


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes held by ``tensor``'s elements."""
    return tensor.element_size() * tensor.nelement()


class PrefixCache:
    """Least-recently-used store of model outputs whose tensors together take at most ``max_bytes``.

    Tensors stay on the device they were stored from. ``max_bytes = 0`` stores nothing.

    Counters: ``hits`` (outputs served by :meth:`fetch`), ``misses`` (outputs offered to
    :meth:`store`, i.e. computed by the model while the cache was on) and ``evictions``.
    """

    def __init__(self, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ConfigError(f"prefix cache max_bytes must be a non-negative integer, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def prefix_length(self, keys: Sequence[Hashable]) -> int:
        """How many leading ``keys`` are cached; changes neither counters nor recency."""
        for i, key in enumerate(keys):
            if key not in self._entries:
                return i
        return len(keys)

    def fetch(self, keys: Sequence[Hashable]) -> list[torch.Tensor]:
        """The stored outputs of ``keys`` (all must be cached), marked most recently used and counted as hits."""
        outputs = []
        for key in keys:
            outputs.append(self._entries[key])
            self._entries.move_to_end(key)
        self.hits += len(outputs)
        return outputs

    def store(self, key: Hashable, output: torch.Tensor) -> None:
        """Keep ``output`` under ``key`` (as most recently used), evicting the least recently used over the bound."""
        self.misses += 1
        size = tensor_bytes(output)
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= tensor_bytes(old)
        self._entries[key] = output
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= tensor_bytes(evicted)
            self.evictions += 1

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._entries.clear()
        self.nbytes = 0

    def __repr__(self) -> str:
        return (
            f"PrefixCache(max_bytes={self.max_bytes}, entries={len(self)}, nbytes={self.nbytes}, "
            f"hits={self.hits}, misses={self.misses}, evictions={self.evictions})"
        )
