"""FP8 block weights with per-row scales: the quantisation, which layers, and both ways to compute, each against an
independent computation."""
from __future__ import annotations

import copy

import pytest
import torch
from tiny_inputs import make_inputs
from torch import nn

from longvie.acceleration.fp8 import (
    FP8_LAYOUT,
    FP8_MAX,
    FP8_STORAGE_DTYPE,
    FP8Linear,
    apply_fp8,
    fp8_target_names,
    quantize_rows,
    scaled_mm_support,
    stored_bytes,
)
from longvie.models.denoiser import LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer


def tiny_denoiser():
    transformer = build_tiny_transformer(0)
    return LongVieDenoiser(transformer, build_tiny_control(transformer)).eval()


def test_per_row_scales_beat_unscaled_e4m3_on_small_weights():
    """N(0, 0.01) weights (the scale of Wan's Linear weights): unscaled e4m3 leaves most of them subnormal."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(512, 1024, generator=g) * 0.01
    unscaled = w.to(FP8_STORAGE_DTYPE).float()
    q, scale = quantize_rows(w)
    per_row = q.float() * scale

    def error(approx):
        return float((approx - w).norm() / w.norm())

    smallest_normal = 2.0 ** -6  # e4m3: exponent bias 7, smallest normal 2^(1-7)
    assert 0.86 < float((w.abs() < smallest_normal).float().mean()) < 0.90  # 88% subnormal
    assert error(per_row) < error(unscaled)
    assert 0.02 < error(per_row) < 0.03 and 0.05 < error(unscaled) < 0.065  # ~2.6% vs ~5.7%
    # layout: one float32 scale per output row = amax / 448, every row reaches the top of the e4m3 range
    assert scale.shape == (512, 1) and scale.dtype == torch.float32 and q.dtype == FP8_STORAGE_DTYPE
    torch.testing.assert_close(scale, w.abs().amax(dim=1, keepdim=True) / FP8_MAX)
    assert torch.equal(q.float().abs().amax(dim=1), torch.full((512,), FP8_MAX))
    assert FP8_LAYOUT.weight_bytes(512, 1024) == 512 * 1024 + 512 * 4
    # an all-zero row stays zero (no division by zero)
    q0, s0 = quantize_rows(torch.zeros(2, 8))
    assert torch.equal(q0.float(), torch.zeros(2, 8)) and torch.equal(s0, torch.ones(2, 1))


@torch.no_grad()
def test_the_block_linears_become_fp8_and_the_sensitive_parts_stay():
    exact = tiny_denoiser()
    fp8 = copy.deepcopy(exact)
    targets = fp8_target_names(fp8)
    converted = apply_fp8(fp8, "weight-only")
    assert converted == targets and fp8_target_names(fp8) == targets
    blocks = len(exact.transformer.blocks) + 2 * exact.control.depth
    assert len(converted) == 12 * blocks  # q k v o, cross q k v o + add_k/add_v, 2 FFN layers per block
    layers = dict(fp8.named_modules())
    for name in converted:
        layer = layers[name]
        assert isinstance(layer, FP8Linear) and layer.weight.dtype == FP8_STORAGE_DTYPE
        assert layer.weight_scale.shape == (layer.out_features, 1) and layer.weight_scale.dtype == torch.float32
        assert layer.bias.dtype == torch.float32  # biases keep the compute dtype
    kept = [n for n, m in fp8.named_modules() if type(m) is nn.Linear]
    for name in ("control.control_t_mod", "control.control_text_linear", "control.control_initial_combine_linear_dense",
                 "control.control_combine_linears.0", "transformer.proj_out",
                 "transformer.condition_embedder.time_embedder.linear_1"):
        assert name in kept
    params = dict(fp8.named_parameters())
    for name in ("transformer.patch_embedding.weight", "transformer.blocks.0.scale_shift_table",
                 "transformer.blocks.0.norm2.weight", "control.control_blocks_dense.0.attn1.norm_q.weight"):
        assert params[name].dtype == torch.float32, name
    # bytes: each converted fp32 weight (4 bytes per element) becomes 1 byte per element + 4 bytes per row
    originals = dict(exact.named_modules())
    saved = sum(4 * originals[n].weight.numel() - FP8_LAYOUT.weight_bytes(*originals[n].weight.shape)
                for n in converted)
    assert stored_bytes(fp8) == stored_bytes(exact) - saved


@torch.no_grad()
def test_weight_only_equals_the_model_with_dequantised_weights():
    exact = tiny_denoiser()
    fp8 = copy.deepcopy(exact)
    apply_fp8(fp8, "weight-only")
    reference = copy.deepcopy(exact)  # independent: each target weight replaced by amax-scaled e4m3 rounding
    modules = dict(reference.named_modules())
    for name in fp8_target_names(reference):
        w = modules[name].weight
        scale = w.abs().amax(dim=1, keepdim=True) / 448
        w.copy_((w / scale).to(torch.float8_e4m3fn).float() * scale)
    x = make_inputs()
    out = fp8(**x)
    torch.testing.assert_close(out, reference(**x), rtol=1e-5, atol=1e-5)
    plain = exact(**x)
    assert not torch.equal(out, plain) and (out - plain).norm() < 0.05 * plain.norm()


@torch.no_grad()
def test_gemm_kind_is_torch_scaled_mm_with_per_token_activation_scales():
    """The GPU path (torch._scaled_mm) runs on the CPU too: one layer against a hand computation, and the whole
    tiny denoiser close to the weight-only one."""
    assert scaled_mm_support("cpu", torch.float32) == (True, "")
    g = torch.Generator().manual_seed(1)
    linear = nn.Linear(64, 48)
    linear.weight.copy_(torch.randn(48, 64, generator=g) * 0.02)
    layer = FP8Linear.from_linear(linear, "gemm")
    x = torch.randn(2, 5, 64, generator=g)
    rows = x.reshape(-1, 64)
    x_scale = rows.abs().amax(dim=1, keepdim=True) / 448
    x_fp8 = (rows / x_scale).to(torch.float8_e4m3fn).float() * x_scale
    w_scale = linear.weight.abs().amax(dim=1, keepdim=True) / 448
    w_fp8 = (linear.weight / w_scale).to(torch.float8_e4m3fn).float() * w_scale
    expected = (x_fp8 @ w_fp8.t() + linear.bias).reshape(2, 5, 48)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)

    exact = tiny_denoiser()
    gemm, weight_only = copy.deepcopy(exact), copy.deepcopy(exact)
    apply_fp8(gemm, "gemm")
    apply_fp8(weight_only, "weight-only")
    inputs = make_inputs()
    a, b, plain = gemm(**inputs), weight_only(**inputs), exact(**inputs)
    assert not torch.equal(a, b)  # the activations are rounded too
    assert (a - plain).norm() < 0.08 * plain.norm()


def test_quantising_on_a_work_device_keeps_the_result_where_asked():
    linear = nn.Linear(32, 16)
    layer = FP8Linear.from_linear(linear, "weight-only", work_device="cpu", keep_device="meta")
    assert layer.weight.device.type == "meta" and layer.weight_scale.device.type == "meta"
    assert linear.weight.dtype == torch.float32  # the source layer is not changed
    with pytest.raises(ValueError, match="FP8 kind"):
        FP8Linear(4, 4, kind="int8")


@pytest.mark.parametrize("kind", ["gemm", "weight-only"])
def test_the_memory_estimator_counts_the_converted_model(kind):
    """The estimator's FP8 bytes (counted on the unconverted model from fp8_target_names and FP8_LAYOUT) equal
    the bytes of the model apply_fp8 converts, float32 row scales included; so do its per-block and
    group-offload sizes (the estimator's WeightBytes of the tiny preset against a converted real model)."""
    from longvie.acceleration import memory
    from longvie.acceleration.offload import unit_bytes

    exact = tiny_denoiser()
    total, scales = memory.fp8_bytes(exact)
    converted = copy.deepcopy(exact)
    apply_fp8(converted, kind)
    assert stored_bytes(converted) == total < stored_bytes(exact)
    assert scales == sum(m.weight_scale.numel() * m.weight_scale.element_size()
                         for m in converted.modules() if isinstance(m, FP8Linear)) > 0

    arch = memory.architecture("tiny")
    weights = memory.weight_bytes(arch)
    real = memory.build_models(arch, parts=("denoiser",))["denoiser"]
    apply_fp8(real, kind)
    assert weights.linear_fp8_denoiser == stored_bytes(real) and weights.fp8_scales == scales
    assert weights.fp8_block_main == stored_bytes(real.transformer.blocks[0])
    assert weights.fp8_stream.slot == max(unit_bytes(real)) and weights.fp8_stream.blocks == sum(
        stored_bytes(block) for block in [*real.transformer.blocks, *real.control.control_blocks_dense,
                                          *real.control.control_blocks_sparse])
