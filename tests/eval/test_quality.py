"""PSNR / SSIM / LPIPS and the quality gate, checked against independent computations."""
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from longvie.eval.availability import MetricUnavailable
from longvie.eval.quality import LpipsMetric, compare_videos, load_lpips, psnr, ssim_per_frame


def _video(seed=0, t=3, h=24, w=32):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _reference_ssim(a, b):
    """SSIM from scipy's Gaussian filter (truncate 3.5 -> 11 taps), borders cropped like skimage."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for ch in range(3):
        x, y = a[..., ch], b[..., ch]
        f = lambda z: gaussian_filter(z, 1.5, truncate=3.5)[5:-5, 5:-5]  # noqa: E731
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
        values.append((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean())
    return float(np.mean(values))


def test_ssim_matches_independent_gaussian_ssim():
    a = _video(0)
    b = np.clip(a.astype(int) + np.random.default_rng(1).integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    ours = ssim_per_frame(a, b)
    expected = [_reference_ssim(a[i], b[i]) for i in range(len(a))]
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)
    assert np.all(ours < 0.99)


def test_psnr_hand_computed_and_infinite_for_identical():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] = 10  # MSE = 100 / 96
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / (100 / 96)))
    assert psnr(a, a) == math.inf


class _TinyPerceptual(torch.nn.Module):
    """A random conv net with the LPIPS calling convention: mean squared feature distance."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x, y):
        return ((self.conv(x) - self.conv(y)) ** 2).mean(dim=(1, 2, 3), keepdim=True)


def test_compare_videos_identical_and_degraded():
    a = _video(2)
    metric = LpipsMetric(_TinyPerceptual(), model_id="tiny")
    same = compare_videos(a, a.copy(), lpips=metric)
    assert same["ssim"] == pytest.approx(1.0) and same["psnr"] == math.inf and same["psnr_is_inf"]
    assert same["lpips"] == 0.0 and same["lpips_model"] == "tiny"
    noisy = np.clip(a.astype(int) + 30, 0, 255).astype(np.uint8)
    worse = compare_videos(noisy, a, lpips=metric)
    assert worse["psnr"] < 30 and worse["ssim"] < 1 and worse["lpips"] > 0


def test_lpips_package_with_random_trunk_gives_zero_for_identical(tmp_path):
    lpips = pytest.importorskip("lpips")
    net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    # a random trunk saved in torchvision's AlexNet key layout exercises the key mapping of load_lpips
    import torchvision

    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "alexnet.pth")
    metric = load_lpips(alexnet_weights=tmp_path / "alexnet.pth")
    a = _video(3, t=2, h=64, w=64)
    assert np.all(metric(a, a) == 0)
    assert np.all(metric(a, 255 - a) > 0)
    del net


def test_lpips_missing_weights_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MetricUnavailable, match="AlexNet"):
        load_lpips(local_files_only=True)
    result = compare_videos(_video(4), _video(4), lpips="auto", local_files_only=True)
    assert result["lpips"].startswith("not computed: needs torchvision AlexNet")
