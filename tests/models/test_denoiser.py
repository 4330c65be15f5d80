"""LongVieDenoiser against independent computations (SPEC §2-3)."""
from __future__ import annotations

import pytest
import torch
from tiny_inputs import B, F, H, W, make_inputs

from longvie.models.denoiser import LongVieDenoiser, rotary_embedding
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer

FH = 2                    # history latent frames (8 RGB frames)


@pytest.fixture(scope="module")
def transformer():
    return build_tiny_transformer(0)


@torch.no_grad()
def test_zero_initialised_control_equals_plain_wan(transformer):
    denoiser = LongVieDenoiser(transformer, build_tiny_control(transformer, zero_adapters=True))
    x = make_inputs(batch=2)
    ours = denoiser(**x)
    plain = transformer(torch.cat([x["latents"], x["image_latents"]], 1), x["timestep"], x["text_embeds"],
                        x["image_embeds"], return_dict=False)[0]
    assert ours.shape == (2, 16, F, H, W)
    assert torch.allclose(ours, plain, atol=1e-6, rtol=0)


@torch.no_grad()
def test_nonzero_control_changes_output(transformer):
    x = make_inputs()
    zero = LongVieDenoiser(transformer, build_tiny_control(transformer, zero_adapters=True))(**x)
    denoiser = LongVieDenoiser(transformer, build_tiny_control(transformer))
    with_control = denoiser(**x)
    assert (with_control - zero).abs().max() > 1e-3
    # control_scale=0 switches the branch off exactly
    assert torch.equal(denoiser(**x, control_scale=0.0), zero)


def wan_rope_reference(head_dim: int, frame_positions, rows: int, cols: int, theta: float = 10000.0):
    """Independent 3D RoPE in the original Wan formulation (complex pairs of adjacent channels):
    44/42/42 of 128 dims for frame/row/column, here d - 4(d//6), 2(d//6), 2(d//6).
    Returns (cos, sin) laid out (1, N, 1, head_dim) with each frequency repeated for its pair."""
    dims = [head_dim - 4 * (head_dim // 6), 2 * (head_dim // 6), 2 * (head_dim // 6)]

    def angles(dim, positions):
        inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        return torch.outer(torch.as_tensor(positions, dtype=torch.float64), inv)

    a_f, a_h, a_w = angles(dims[0], frame_positions), angles(dims[1], range(rows)), angles(dims[2], range(cols))
    n_f = len(frame_positions)
    grid = torch.cat([a_f[:, None, None].expand(n_f, rows, cols, -1), a_h[None, :, None].expand(n_f, rows, cols, -1),
                      a_w[None, None].expand(n_f, rows, cols, -1)], dim=-1).reshape(n_f * rows * cols, -1)
    grid = grid.repeat_interleave(2, dim=-1)
    return grid.cos()[None, :, None].float(), grid.sin()[None, :, None].float()


def test_rotary_embedding_matches_reference_with_offset(transformer):
    head_dim = transformer.config.attention_head_dim
    cos, sin = rotary_embedding(transformer.rope, 3, 4, 7, frame_offset=2)
    ref_cos, ref_sin = wan_rope_reference(head_dim, [2, 3, 4], 4, 7)
    assert torch.allclose(cos.double(), ref_cos.double(), atol=1e-6) and torch.allclose(sin.double(), ref_sin.double(), atol=1e-6)
    # offset 0 is exactly diffusers' own table
    d_cos, d_sin = transformer.rope(torch.zeros(1, 36, 3, 8, 14))
    cos0, sin0 = rotary_embedding(transformer.rope, 3, 4, 7)
    assert torch.equal(cos0, d_cos) and torch.equal(sin0, d_sin)


@torch.no_grad()
def reference_forward_with_history(transformer, control, x, history, clip_frame_offset):
    """A direct re-computation of SPEC §2-3 from the modules' parts, with the reference RoPE."""
    t = transformer
    head_dim = t.config.attention_head_dim
    embed = lambda v: t.patch_embedding(v).flatten(2).transpose(1, 2)  # noqa: E731
    temb, proj, text, image = t.condition_embedder(x["timestep"], x["text_embeds"], x["image_embeds"])
    t_mod = proj.unflatten(1, (6, -1))
    context = torch.cat([image, text], 1)
    hist = embed(torch.cat([torch.ones(B, 20, FH, H, W), history], 1))
    clip = embed(torch.cat([x["latents"], x["image_latents"]], 1))
    tokens = torch.cat([hist, clip], 1)
    n_hist = hist.shape[1]
    rope_hist = wan_rope_reference(head_dim, range(FH), H // 2, W // 2)
    rope_clip_main = wan_rope_reference(head_dim, range(clip_frame_offset, clip_frame_offset + F), H // 2, W // 2)
    rope_main = tuple(torch.cat(pair, 1) for pair in zip(rope_hist, rope_clip_main))
    rope_ctrl = wan_rope_reference(head_dim, range(F), H // 2, W // 2)
    dense = control.control_initial_combine_linear_dense(embed(x["dense_latents"]))
    sparse = control.control_initial_combine_linear_sparse(embed(x["sparse_latents"]))
    c_ctx, c_mod = control.control_text_linear(context), control.control_t_mod(t_mod)
    for i, block in enumerate(t.blocks):
        tokens = block(tokens, context, t_mod, rope_main)
        if i < len(control.control_blocks_dense):
            dense = control.control_blocks_dense[i](dense, c_ctx, c_mod, rope_ctrl)
            sparse = control.control_blocks_sparse[i](sparse, c_ctx, c_mod, rope_ctrl)
            tokens[:, n_hist:] += control.control_combine_linears[i](dense + sparse)
    tokens = tokens[:, n_hist:]
    shift, scale = (t.scale_shift_table + temb[:, None]).chunk(2, dim=1)
    out = t.proj_out(t.norm_out(tokens) * (1 + scale) + shift)
    # unpatchify (1, 2, 2) patches: (B, F*h*w, 2*2*16) -> (B, 16, F, H, W)
    out = out.view(B, F, H // 2, W // 2, 1, 2, 2, 16).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return out.reshape(B, 16, F, H, W)


@torch.no_grad()
def test_history_tokens_and_rope_offset_match_direct_computation(transformer):
    control = build_tiny_control(transformer)
    denoiser = LongVieDenoiser(transformer, control)
    x = make_inputs()
    history = torch.randn(B, 16, FH, H, W, generator=torch.Generator().manual_seed(5))
    ours = denoiser(**x, history_latents=history)
    without = denoiser(**x)
    assert ours.shape == without.shape == (B, 16, F, H, W)
    assert (ours - without).abs().max() > 1e-3, "history tokens must change the output"

    reference = reference_forward_with_history(transformer, control, x, history, clip_frame_offset=FH)
    assert torch.allclose(ours, reference, atol=1e-5), (ours - reference).abs().max()
    # ...and the offset matters: without it the reference disagrees.
    no_offset = reference_forward_with_history(transformer, control, x, history, clip_frame_offset=0)
    assert (ours - no_offset).abs().max() > 1e-4


def test_gradient_checkpointing_gives_same_gradients(transformer):
    import copy

    x = make_inputs()
    grads = []
    for checkpointing in (False, True):
        tr = copy.deepcopy(transformer)
        denoiser = LongVieDenoiser(tr, build_tiny_control(tr)).train()
        if checkpointing:
            denoiser.enable_gradient_checkpointing()
        out = denoiser(**x, history_latents=torch.ones(B, 16, 1, H, W))
        out.square().mean().backward()
        grads.append(denoiser.control.control_blocks_dense[0].attn1.to_q.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@torch.no_grad()
def test_input_shape_errors(transformer):
    denoiser = LongVieDenoiser(transformer, build_tiny_control(transformer))
    x = make_inputs()
    x["dense_latents"] = x["dense_latents"][:, :16]
    with pytest.raises(ValueError, match="dense_latents"):
        denoiser(**x)
    x = make_inputs()
    with pytest.raises(ValueError, match="history_latents"):
        denoiser(**x, history_latents=torch.zeros(B, 16, 2, H + 2, W))
