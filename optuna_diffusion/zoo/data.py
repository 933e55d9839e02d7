"""The scikit-learn digits data set as diffusion-ready tensors.

The 1,797 8x8 grey-scale digits ship inside scikit-learn, so everything built on them
(the bundled diffusion model, its feature network, the `digits` study) runs offline.
"""

from __future__ import annotations

import numpy as np
import torch

NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES  # label of the unconditional pass of classifier-free guidance
IMAGE_SIZE = 8
_PIXEL_MAX = 16.0


def load_digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Return all digits as ``(images, labels)``: ``(1797, 1, 8, 8)`` floats in [-1, 1] and ``(1797,)`` ints."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32)).unsqueeze(1)
    images = images / (_PIXEL_MAX / 2) - 1.0
    labels = torch.from_numpy(digits.target.astype(np.int64))
    return images, labels


def feature_net_split(num_items: int, held_out_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed train/held-out index split used to train and check the digits feature network."""
    order = np.random.default_rng(seed).permutation(num_items)
    num_held_out = int(round(num_items * held_out_fraction))
    return np.sort(order[num_held_out:]), np.sort(order[:num_held_out])
