"""Tests of optuna_diffusion.fid with a seeded, randomly initialised DigitsFeatureNet (no trained weights needed)."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from optuna_diffusion import fid
from optuna_diffusion import reference_stats as stats_module
from optuna_diffusion.errors import OptunaDiffusionError
from optuna_diffusion.fid import INCEPTION_WEIGHTS_FILE, FIDMeter, InceptionFeatures, fid_of_images, load_feature_extractor
from optuna_diffusion.reference_stats import ReferenceStats, load_reference_npz, reference_stats
from optuna_diffusion.zoo.data import load_digits_images
from optuna_diffusion.zoo.feature_net import DigitsFeatureNet


def _net(seed: int) -> DigitsFeatureNet:
    torch.manual_seed(seed)
    return DigitsFeatureNet().eval().requires_grad_(False)


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    images, _ = load_digits_images()
    return images[:600]


@pytest.fixture(scope="module")
def net() -> DigitsFeatureNet:
    return _net(0)


@pytest.fixture(scope="module")
def stats(real: torch.Tensor, net: DigitsFeatureNet) -> ReferenceStats:
    return reference_stats(real, net, cache_dir=None, batch_size=256)


def _noisy(images: torch.Tensor, scale: float, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (images + scale * torch.randn(images.shape, generator=generator)).clamp(-1.0, 1.0)


def _assert_one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def test_reference_stats_match_numpy(real: torch.Tensor, net: DigitsFeatureNet, stats: ReferenceStats) -> None:
    features = net(real).double().numpy()
    assert stats.num_samples == real.shape[0]
    assert stats.mu.dtype == np.float64 and stats.sigma.shape == (net.num_features, net.num_features)
    np.testing.assert_allclose(stats.mu, features.mean(axis=0), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(features, rowvar=False), rtol=1e-6, atol=1e-12)


def test_fid_of_real_against_own_stats_is_zero(
    real: torch.Tensor, net: DigitsFeatureNet, stats: ReferenceStats
) -> None:
    typical = fid_of_images(_noisy(real, 0.5), stats, net, batch_size=256)
    assert typical > 0
    assert abs(fid_of_images(real, stats, net, batch_size=256)) < 1e-3 * typical


def test_injected_stats_match_torchmetrics_with_real_images(
    real: torch.Tensor, net: DigitsFeatureNet, stats: ReferenceStats
) -> None:
    fake = _noisy(real[:300], 0.3)
    direct = FrechetInceptionDistance(feature=net)
    direct.update(real, real=True)
    direct.update(fake, real=False)
    expected = float(direct.compute())

    meter = FIDMeter(stats, net)
    meter.update(fake[:150])
    meter.update(fake[150:])
    assert meter.num_samples == 300
    assert meter.compute() == pytest.approx(expected, rel=1e-4)

    # Unknown count (foreign npz): any n >= 2 gives the same mean and covariance.
    unknown = FIDMeter(ReferenceStats(stats.mu, stats.sigma, num_samples=0), net)
    unknown.update(fake)
    assert unknown.compute() == pytest.approx(expected, rel=1e-4)


def test_meter_reset_keeps_reference_and_guards_small_batches(
    real: torch.Tensor, net: DigitsFeatureNet, stats: ReferenceStats
) -> None:
    meter = FIDMeter(stats, net)
    meter.update(_noisy(real[:100], 0.5))
    noisy_fid = meter.compute()
    meter.reset()
    assert meter.num_samples == 0
    with pytest.raises(OptunaDiffusionError) as error:
        meter.compute()
    assert "at least 2" in _assert_one_line(error)
    meter.update(real[:1])
    with pytest.raises(OptunaDiffusionError):
        meter.compute()
    meter.reset()
    with torch.inference_mode():  # callers often sample under inference mode
        meter.update(_noisy(real[:100], 0.5))
    assert meter.compute() == pytest.approx(noisy_fid, rel=1e-6)


def test_meter_rejects_stats_of_another_width(net: DigitsFeatureNet) -> None:
    wrong = ReferenceStats(np.zeros(3), np.eye(3), num_samples=10)
    with pytest.raises(OptunaDiffusionError) as error:
        FIDMeter(wrong, net)
    _assert_one_line(error)


def test_npz_round_trip(tmp_path: Path, stats: ReferenceStats) -> None:
    path = stats.save_npz(tmp_path / "sub" / "ref.npz")
    loaded = load_reference_npz(path)
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.num_samples == stats.num_samples
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left behind


def test_guided_diffusion_style_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mu = rng.normal(size=5).astype(np.float32)
    sigma = np.eye(5, dtype=np.float32)
    path = tmp_path / "VIRTUAL_imagenet64_labeled.npz"
    np.savez(path, arr_0=rng.integers(0, 255, size=(4, 8, 8, 3), dtype=np.uint8), mu=mu, sigma=sigma)
    loaded = load_reference_npz(path)
    assert loaded.mu.dtype == np.float64 and loaded.sigma.dtype == np.float64
    np.testing.assert_array_equal(loaded.mu, mu.astype(np.float64))
    assert loaded.num_samples == 0


def test_npz_errors(tmp_path: Path) -> None:
    with pytest.raises(OptunaDiffusionError) as error:
        load_reference_npz(tmp_path / "absent.npz")
    assert "not found" in _assert_one_line(error)

    path = tmp_path / "images_only.npz"
    np.savez(path, arr_0=np.zeros((2, 4, 4, 3), dtype=np.uint8), mu=np.zeros(3))
    with pytest.raises(OptunaDiffusionError) as error:
        load_reference_npz(path)
    message = _assert_one_line(error)
    assert "sigma" in message and "arr_0" in message

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file\n" * 3)
    with pytest.raises(OptunaDiffusionError) as error:
        load_reference_npz(garbage)
    _assert_one_line(error)


def test_reference_cache_is_reused_and_keyed(tmp_path: Path, real: torch.Tensor) -> None:
    net = _net(0)
    calls = []
    net.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    images = real[:200]

    first = reference_stats(images, net, cache_dir=tmp_path, batch_size=64)
    assert sum(calls) == 200
    cached = list(tmp_path.glob("reference-*.npz"))
    assert len(cached) == 1

    calls.clear()
    second = reference_stats(images, net, cache_dir=tmp_path, batch_size=64)
    assert calls == []  # read from the cache, not recomputed
    np.testing.assert_array_equal(second.mu, first.mu)
    np.testing.assert_array_equal(second.sigma, first.sigma)
    assert second.num_samples == 200

    other = reference_stats(images, _net(1), cache_dir=tmp_path, batch_size=64)
    assert not np.allclose(other.mu, first.mu)
    reference_stats(real[:150], net, cache_dir=tmp_path, batch_size=64)
    assert len(list(tmp_path.glob("reference-*.npz"))) == 3  # other extractor and other data: new keys

    assert stats_module._cache_key(images, net) == stats_module._cache_key(images.clone(), _net(0))
    assert stats_module._cache_key(images, net) != stats_module._cache_key(images, _net(1))


def test_reference_stats_needs_two_images(net: DigitsFeatureNet, real: torch.Tensor) -> None:
    with pytest.raises(OptunaDiffusionError) as error:
        reference_stats(real[:1], net, cache_dir=None)
    _assert_one_line(error)


def test_unknown_extractor_name() -> None:
    with pytest.raises(OptunaDiffusionError) as error:
        load_feature_extractor("resnet")
    message = _assert_one_line(error)
    assert "'resnet'" in message and "digits" in message and "inception" in message


def test_inception_error_is_one_line() -> None:
    try:
        extractor = load_feature_extractor("inception")
    except OptunaDiffusionError as error:
        message = str(error)
        assert "\n" not in message
        assert "pip install torch-fidelity" in message or INCEPTION_WEIGHTS_FILE in message
    else:  # torch-fidelity and the weights are present on this machine
        assert extractor.num_features == 2048


def test_inception_missing_torch_fidelity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fid, "_torch_fidelity_available", lambda: False)
    with pytest.raises(OptunaDiffusionError) as error:
        load_feature_extractor("inception")
    assert _assert_one_line(error) == (
        "InceptionV3 features need torch-fidelity: pip install torch-fidelity"
    )


def test_inception_weights_not_downloadable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def offline(weights_path: str | None) -> torch.nn.Module:
        assert weights_path is None
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(fid, "_torch_fidelity_available", lambda: True)
    monkeypatch.setattr(fid, "_new_inception", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(OptunaDiffusionError) as error:
        load_feature_extractor("inception")
    message = _assert_one_line(error)
    assert INCEPTION_WEIGHTS_FILE in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "weights_path" in message and "--feature-weights" in message

    with pytest.raises(OptunaDiffusionError) as error:
        load_feature_extractor("inception", weights_path=str(tmp_path / "absent.pth"))
    assert "not found" in _assert_one_line(error)


def test_inception_weights_found_in_hub_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = []
    monkeypatch.setattr(fid, "_torch_fidelity_available", lambda: True)
    monkeypatch.setattr(fid, "_new_inception", lambda weights_path: seen.append(weights_path) or torch.nn.Identity())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / INCEPTION_WEIGHTS_FILE).write_bytes(b"")
    extractor = load_feature_extractor("inception")
    assert isinstance(extractor, InceptionFeatures) and extractor.num_features == 2048
    assert seen == [str(tmp_path / "checkpoints" / INCEPTION_WEIGHTS_FILE)]


def _inception_study_error(**overrides: str) -> str:
    """The one-line error of building a digits study switched to InceptionV3 features."""
    from optuna_diffusion.study import build_evaluator
    from optuna_diffusion.study_config import load_study_config, with_overrides

    config = with_overrides(load_study_config("digits"), features="inception", **overrides)
    with pytest.raises(OptunaDiffusionError) as error:
        build_evaluator(config)
    return _assert_one_line(error)


def test_a_study_names_what_inception_features_lack_in_a_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # "study 'digits' needs InceptionV3 features need torch-fidelity" read wrong: the study names a noun.
    monkeypatch.setattr(fid, "_torch_fidelity_available", lambda: False)
    assert _inception_study_error() == (
        "study 'digits' needs torch-fidelity for InceptionV3 features (pip install torch-fidelity)"
    )
    monkeypatch.setattr(fid, "_torch_fidelity_available", lambda: True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert _inception_study_error() == (
        f"study 'digits' needs the InceptionV3 weights (not downloaded: place {INCEPTION_WEIGHTS_FILE} in "
        f"{tmp_path / 'hub' / 'checkpoints'}, or pass its path with --feature-weights)"
    )
    absent = str(tmp_path / "absent.pth")
    assert _inception_study_error(feature_weights=absent) == (
        f"study 'digits' needs the InceptionV3 weights: {absent} does not exist (--feature-weights)"
    )


class _RecordingInception(torch.nn.Module):
    """Stands in for InceptionV3: records its input and returns 2048 features."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen = images
        return images.float().mean(dim=(2, 3)).repeat(1, 683)[:, :2048]


def test_inception_adapter_converts_images() -> None:
    inner = _RecordingInception()
    adapter = InceptionFeatures(inner)
    grey = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2).repeat(3, 1, 1, 1)
    features = adapter(grey)
    assert features.shape == (3, 2048) and features.dtype == torch.float32
    assert inner.seen.dtype == torch.uint8 and inner.seen.shape == (3, 3, 2, 2)
    assert inner.seen[0, 2].flatten().tolist() == [0, 128, 255, 255]
    with pytest.raises(OptunaDiffusionError) as error:
        adapter(torch.zeros(2, 2, 4, 4))
    _assert_one_line(error)


def test_digits_extractor_from_folder(tmp_path: Path, real: torch.Tensor) -> None:
    _net(3).save_pretrained(tmp_path)
    extractor = load_feature_extractor("digits", weights_path=str(tmp_path))
    assert extractor.num_features == 64 and not extractor.training
    torch.testing.assert_close(extractor(real[:4]), _net(3)(real[:4]))

    with pytest.raises(OptunaDiffusionError) as error:
        load_feature_extractor("digits", weights_path=str(tmp_path / "absent"))
    assert "not found" in _assert_one_line(error)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_extractor(tmp_path: Path, real: torch.Tensor, net: DigitsFeatureNet) -> None:
    path = tmp_path / "features.pt"
    torch.jit.script(net).save(str(path))
    extractor = load_feature_extractor(str(path))
    assert extractor.num_features == 64
    torch.testing.assert_close(extractor(real[:4]), net(real[:4]))

    with pytest.raises(OptunaDiffusionError) as error:
        load_feature_extractor(str(tmp_path / "absent.pt"))
    _assert_one_line(error)
