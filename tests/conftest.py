"""Shared fixtures (helpers the tests import live in ``tests/helpers.py``); one torch thread per test run."""

from __future__ import annotations

import pytest
import torch

from .helpers import scheduler_config, tiny_unet

torch.set_num_threads(1)


@pytest.fixture
def tiny_model():
    from optuna_diffusion.models import DiffusionModel

    return DiffusionModel(tiny_unet().requires_grad_(False), scheduler_config(), "tiny")
