"""Step caching: off = exact; a skipped step reuses the last residual, control injections included;
TeaCache and MagCache decide as their published rules (checked against hand computations)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_inputs import B, make_inputs

from longvie.acceleration.step_cache import (
    MAGCACHE_WAN21_I2V_480P,
    TEACACHE_WAN21_I2V_480P,
    StepCacheConfig,
    calibration_result,
    load_mag_ratios,
    magcache_decisions,
    make_step_cache,
    nearest_resample,
    teacache_decisions,
)
from longvie.models.denoiser import ClipCache, LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer
from longvie.sampling.scheduling import make_sampling_scheduler

PUBLISHED_RET_STEPS = [2.57151496e+05, -3.54229917e+04, 1.40286849e+03, -1.35890334e+01, 1.32517977e-01]


@pytest.fixture(scope="module")
def denoiser():
    transformer = build_tiny_transformer(0)
    return LongVieDenoiser(transformer, build_tiny_control(transformer))


def _config(kind, **kw):
    if kind == "magcache":
        kw.setdefault("magcache_ratios", {"cond": [1.0, 1.0, 1.0]})
        kw.setdefault("retention_ratio", 0.0)
    return StepCacheConfig(kind, **kw)


@torch.no_grad()
def test_threshold_zero_is_the_exact_path(denoiser):
    cache = make_step_cache(StepCacheConfig("firstblock", threshold=0.0, full_first_steps=0, full_last_steps=0), 4)
    clip = ClipCache()
    x = make_inputs()
    for timestep in (900.0, 600.0, 300.0, 50.0):
        x["timestep"] = torch.full((B,), timestep)
        assert torch.equal(denoiser(**x, clip_cache=clip, block_stack=cache), denoiser(**x))
    assert cache.skipped == 0


@torch.no_grad()
@pytest.mark.parametrize("kind", ["firstblock", "teacache", "magcache"])
def test_skipped_step_keeps_the_control_injection(denoiser, kind):
    """Same inputs twice: the second call is skipped and must still equal the full output, which holds only
    if the cached residual carries the control branch's injections."""
    x = make_inputs()
    config = _config(kind, threshold=0.5, full_first_steps=1, full_last_steps=0)
    timesteps = torch.full((3,), float(x["timestep"][0]))  # the same timestep: zero change for TeaCache
    cache = make_step_cache(config, 3, timesteps=timesteps, denoiser=denoiser)
    clip = ClipCache()
    full = denoiser(**x)
    first = denoiser(**x, clip_cache=clip, block_stack=cache)
    second = denoiser(**x, clip_cache=clip, block_stack=cache)
    assert cache.skipped == 1 and config.traces[0]["skipped"] == [False, True]
    assert torch.allclose(first, full, atol=1e-6) and torch.allclose(second, full, atol=1e-5)
    # the control contribution is not negligible here, so dropping it would be caught
    no_control = denoiser(**x, control_scale=0.0)
    assert (full - no_control).abs().max() > 1e-3


@torch.no_grad()
def test_large_change_is_recomputed(denoiser):
    cache = make_step_cache(StepCacheConfig("firstblock", threshold=1e-3, full_first_steps=1, full_last_steps=0), 3)
    clip = ClipCache()
    x = make_inputs()
    denoiser(**x, clip_cache=clip, block_stack=cache)
    x["latents"] = torch.randn_like(x["latents"])
    x["timestep"] = torch.full((B,), 100.0)
    assert torch.equal(denoiser(**x, clip_cache=clip, block_stack=cache), denoiser(**x))
    assert cache.skipped == 0


@torch.no_grad()
def test_teacache_decisions_on_a_recorded_trace_equal_a_hand_computation(denoiser):
    """Record e0 (the timestep modulation every block gets) through diffusers' own embedding forward over a
    150-step schedule, then apply TeaCache4Wan2.1's ret_steps rule by hand with numpy.poly1d and the
    published I2V-480P coefficients; the cache's plan must match step by step."""
    num_steps, threshold = 150, 0.19
    timesteps = make_sampling_scheduler(num_steps, 5.0).timesteps
    emb = denoiser.transformer.condition_embedder
    x = make_inputs()
    _, e0, _, _ = emb(timesteps, x["text_embeds"].expand(num_steps, -1, -1))            # (T, 6*dim) recorded
    e0 = e0.double().numpy()

    poly = np.poly1d(PUBLISHED_RET_STEPS)
    expected, accumulated, previous = [], 0.0, None
    for n in range(num_steps):
        if n < 5:                                    # ret_steps: 5 retained steps, no cutoff at the end
            skip, accumulated = False, 0.0
        else:
            accumulated += poly(np.abs(e0[n] - previous).mean() / np.abs(previous).mean())
            skip = accumulated < threshold
            if not skip:
                accumulated = 0.0
        previous = e0[n]
        expected.append(skip)

    config = StepCacheConfig("teacache", threshold=threshold)
    cache = make_step_cache(config, num_steps, timesteps=timesteps, denoiser=denoiser)
    assert cache.plan() == expected
    assert 0 < sum(expected) < num_steps - 5          # the trace exercises both outcomes
    assert TEACACHE_WAN21_I2V_480P["ret_steps"].coefficients == tuple(PUBLISHED_RET_STEPS)


def test_teacache_rule_on_a_fixed_trace():
    # original variant: retain step 0, compute the last step; rescale(x) = x here, threshold 0.25
    skips, acc = teacache_decisions([0.0, 0.1, 0.1, 0.1, 0.3, 0.1, 0.1], (1.0, 0.0), 0.25, 1, 1)
    assert skips == [False, True, True, False, False, True, False]
    assert np.allclose(acc, [0, 0.1, 0.2, 0, 0, 0.1, 0])


def test_magcache_rule_and_published_ratios():
    # hand computation: K=2, threshold 0.1, retention 1
    ratios = [1.0, 0.98, 0.97, 0.99, 1.0, 0.85, 1.0]
    skips, errors = magcache_decisions(ratios, 0.1, 2, 1)
    # n=1: p .98 e .02 skip; n=2: p .9506 e .0694 skip; n=3: 3 skipped > K -> compute, reset;
    # n=4: p 1.0 e 0 skip; n=5: p .85 e .15 >= .1 -> compute, reset; n=6: p 1 e 0 skip
    assert skips == [False, True, True, False, True, False, True]
    assert np.allclose(errors, [0, 0.02, 0.02 + 0.0494, 0, 0, 0, 0])
    published = load_mag_ratios({"cond": list(MAGCACHE_WAN21_I2V_480P[0::2])})
    assert len(published["cond"]) == 40 and published["cond"][1] == 0.98783
    resampled = nearest_resample(published["cond"], 50)
    assert resampled[0] == 1.0 and resampled[-1] == 0.92617 and len(resampled) == 50


@torch.no_grad()
def test_magcache_calibration_records_mean_magnitude_ratios(denoiser):
    config = StepCacheConfig("magcache", calibrate=True)
    timesteps = [900.0, 700.0, 400.0]
    cache = make_step_cache(config, 3, denoiser=denoiser)
    clip, x = ClipCache(), make_inputs()
    residuals = []

    def recording(run, state, num_blocks):  # the independent measurement: the exact residual of every call
        final = run(state, 0, num_blocks)
        residuals.append(final.tokens - state.tokens)
        return final

    clip_ref = ClipCache()
    for t in timesteps:
        x["timestep"] = torch.full((B,), t)
        out = denoiser(**x, clip_cache=clip, block_stack=cache)
        assert torch.equal(out, denoiser(**x, clip_cache=clip_ref, block_stack=recording))  # never skips
    norms = [r.norm(dim=-1) for r in residuals]
    expected = [1.0] + [float((norms[i] / norms[i - 1]).mean()) for i in (1, 2)]
    result = calibration_result(config, 3, shift=5.0)
    assert np.allclose(result["cond"], expected, atol=1e-5) and result["steps"] == 3
    assert load_mag_ratios(result)["cond"] == result["cond"]


def test_config_defaults_and_errors(tmp_path):
    assert StepCacheConfig("teacache").threshold == 0.20
    assert StepCacheConfig("magcache").threshold == 0.24
    assert StepCacheConfig("teacache").steps_always_computed(50) == (5, 0)
    assert StepCacheConfig("teacache", teacache_variant="original").steps_always_computed(50) == (1, 1)
    assert StepCacheConfig("magcache").steps_always_computed(50) == (10, 0)
    with pytest.raises(ValueError, match="kind"):
        StepCacheConfig("magic")
    with pytest.raises(ValueError, match="not found"):
        StepCacheConfig("magcache", magcache_ratios=tmp_path / "missing.json")
    with pytest.raises(ValueError, match="threshold"):
        StepCacheConfig("teacache", threshold=float("nan"))


@torch.no_grad()
def test_pipeline_caches_one_per_branch_and_skips_per_plan(tiny_pipeline):
    """Through the pipeline: the conditional and unconditional branches each get a cache; TeaCache's plan
    is the same for both (it depends on the timestep only) and the skipped calls are the planned ones."""
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)
    config = StepCacheConfig("teacache", threshold=10.0, full_first_steps=1)  # generous: most steps skip
    frames, _ = tiny_pipeline(video[0], "a test", video, video, num_frames=9, height=32, width=48,
                              num_inference_steps=6, progress=False, step_cache=config)
    assert [t["branch"] for t in config.traces] == ["cond", "uncond"]
    for trace in config.traces:
        assert trace["skipped"] == trace["plan"] and sum(trace["skipped"]) >= 3
    exact, _ = tiny_pipeline(video[0], "a test", video, video, num_frames=9, height=32, width=48,
                             num_inference_steps=6, progress=False)
    assert frames.shape == exact.shape and 0 < np.abs(frames.astype(int) - exact.astype(int)).mean() < 64



def test_all_ranks_decide_alike_under_torch_distributed(monkeypatch):
    """CFG-parallel MagCache: each rank plans its own branch; the plans are combined with an all-reduce so
    that a step is skipped only where every rank skips it. Two ranks are simulated: the all-reduce sees the
    other rank's flags and must apply MIN."""
    import torch.distributed as dist

    other_rank, _ = magcache_decisions([1.0, 1.0, 0.5, 1.0, 1.0], 0.3, 6, 1)   # the uncond branch's plan
    seen = {}

    def all_reduce(tensor, op=None):
        seen["op"] = op
        other = torch.tensor([int(s) for s in other_rank], dtype=tensor.dtype)
        tensor.copy_(torch.minimum(tensor, other) if op == dist.ReduceOp.MIN else tensor + other)

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    config = StepCacheConfig("magcache", threshold=0.3, retention_ratio=0.0,
                             magcache_ratios={"cond": [1.0] * 5, "uncond": [1.0, 1.0, 0.5, 1.0, 1.0]})
    plan = make_step_cache(config, 5, branch="cond").plan()
    own, _ = magcache_decisions([1.0] * 5, 0.3, 6, 1)
    assert own != other_rank and seen["op"] == dist.ReduceOp.MIN
    assert plan == [a and b for a, b in zip(own, other_rank)]
