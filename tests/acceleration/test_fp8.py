"""FP8 weight storage, bf16/float32 compute: weights round-trip through float8_e4m3fn and nothing else changes."""
from __future__ import annotations

import copy

import torch
from tiny_inputs import make_inputs

from longvie.acceleration.fp8 import FP8_STORAGE_DTYPE, apply_fp8_storage, stored_bytes
from longvie.models.denoiser import LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer


def tiny_denoiser():
    transformer = build_tiny_transformer(0)
    return LongVieDenoiser(transformer, build_tiny_control(transformer))


@torch.no_grad()
def test_fp8_storage_round_trip_and_kept_modules():
    exact = tiny_denoiser()
    fp8 = copy.deepcopy(exact)
    apply_fp8_storage(fp8, compute_dtype=torch.float32)

    params = dict(fp8.named_parameters())
    block_linear = "transformer.blocks.0.attn1.to_q.weight"
    control_linear = "control.control_blocks_dense.0.ffn.net.2.weight"
    assert params[block_linear].dtype == FP8_STORAGE_DTYPE and params[control_linear].dtype == FP8_STORAGE_DTYPE
    for kept in ("transformer.patch_embedding.weight", "transformer.condition_embedder.time_embedder.linear_1.weight",
                 "transformer.proj_out.weight", "transformer.blocks.0.norm2.weight",
                 "transformer.blocks.0.scale_shift_table", "control.control_combine_linears.0.weight",
                 "control.control_initial_combine_linear_dense.weight", "control.control_blocks_dense.0.attn1.norm_q.weight"):
        assert params[kept].dtype == torch.float32, kept
    assert stored_bytes(fp8) < 0.5 * stored_bytes(exact)

    # the stored weights are the FP8 rounding of the originals
    original = dict(exact.named_parameters())
    assert torch.equal(params[block_linear].float(), original[block_linear].to(FP8_STORAGE_DTYPE).float())

    # independent reference: the exact model with every cast weight replaced by its FP8 rounding
    rounded = copy.deepcopy(exact)
    for name, param in rounded.named_parameters():
        if params[name].dtype == FP8_STORAGE_DTYPE:
            param.copy_(param.to(FP8_STORAGE_DTYPE).float())
    x = make_inputs()
    out = fp8(**x)
    assert torch.allclose(out, rounded(**x), atol=1e-5, rtol=1e-5)
    # ...and it is not the exact model (the rounding is real), yet close to it
    reference = exact(**x)
    assert not torch.equal(out, reference)
    assert (out - reference).norm() < 0.2 * reference.norm()
    # weights are stored in FP8 again after the forward
    assert dict(fp8.named_parameters())[block_linear].dtype == FP8_STORAGE_DTYPE
