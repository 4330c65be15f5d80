"""Devices are explicit: "cuda" becomes cuda:<LOCAL_RANK> / the current device; generators keep their device."""
from __future__ import annotations

import pytest
import torch

from longvie.acceleration.devices import draw_noise, resolve_device


def test_cuda_follows_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("cuda", device_count=8) == torch.device("cuda", 3)
    assert resolve_device(None, device_count=8) == torch.device("cuda", 3)
    assert resolve_device("cuda:1", device_count=8) == torch.device("cuda", 1)  # explicit index wins
    assert resolve_device("cpu", device_count=8) == torch.device("cpu")


def test_cuda_without_launcher_is_the_current_device(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("cuda", device_count=2, current_device=1) == torch.device("cuda", 1)
    assert resolve_device(None, device_count=0) == torch.device("cpu")


def test_bad_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "4")
    with pytest.raises(ValueError, match="only 2 CUDA"):
        resolve_device("cuda", device_count=2)
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(ValueError, match="not an integer"):
        resolve_device("cuda", device_count=2)


def test_noise_from_seed_and_from_generator():
    shape = (1, 16, 3, 4, 6)
    expected = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(7))
    torch.testing.assert_close(draw_noise(shape, None, 7, "cpu"), expected)
    generator = torch.Generator("cpu").manual_seed(7)
    torch.testing.assert_close(draw_noise(shape, generator, 0, "cpu"), expected)


class _MetaGenerator:
    """Stands in for a CUDA generator: noise must be drawn on the generator's device."""

    device = torch.device("meta")


def test_noise_is_drawn_on_the_generators_device(monkeypatch):
    seen = {}
    real = torch.randn

    def spy(*args, **kwargs):
        seen["device"] = kwargs["device"]
        kwargs.pop("generator")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "randn", spy)
    noise = draw_noise((2, 3), _MetaGenerator(), 0, "meta")
    assert seen["device"] == torch.device("meta") and noise.device.type == "meta"
