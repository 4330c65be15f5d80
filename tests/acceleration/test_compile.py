"""Regional compilation (40 main + 2 x 12 control blocks in the release; 4 + 2 x 2 here) == eager."""
from __future__ import annotations

import pytest
import torch
from tiny_inputs import B, H, W, make_inputs

from longvie.acceleration.compile import CompileConfig, apply_regional_compile, inductor_available
from longvie.models.denoiser import ClipCache, LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer


@torch.no_grad()
def test_regional_compile_matches_eager(monkeypatch, tmp_path):
    reason = inductor_available()
    if reason:
        pytest.skip(f"inductor cannot compile on this CPU: {reason}")
    import torch._inductor.config as inductor_config

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    # no worker pool: faster on a 2-core CI machine. config.patch, not monkeypatch: undoing a monkeypatch of
    # inductor's config module deletes the entry, and every later compilation in the process then fails.
    with inductor_config.patch({"compile_threads": 1}):
        transformer = build_tiny_transformer(0)
        denoiser = LongVieDenoiser(transformer, build_tiny_control(transformer))
        x = make_inputs()
        x["history_latents"] = torch.randn(B, 16, 2, H, W, generator=torch.Generator().manual_seed(3))
        torch._dynamo.reset()
        compiled_blocks = apply_regional_compile(denoiser, CompileConfig(backend="inductor"))
        assert compiled_blocks == 4 + 2 * 2
        cache = ClipCache()
        for timestep in (620.0, 80.0):
            x["timestep"] = torch.full((B,), timestep)
            compiled = denoiser(**x, clip_cache=cache)
            with torch.compiler.set_stance("force_eager"):
                eager = denoiser(**x)
            assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-5), (compiled - eager).abs().max()
        # the blocks really run compiled code
        assert all(getattr(block, "_compiled_call_impl", None) is not None for block in transformer.blocks)
