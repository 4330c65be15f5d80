"""Released LongVie 2 weights: key tables, exact round trips and clear failures (SPEC §2)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_inputs import make_inputs

from longvie.models.denoiser import LongVieDenoiser
from longvie.presets.tiny import build_tiny_control, build_tiny_transformer, tiny_dit_overlay
from longvie.weights.checkpoint_keys import (
    BLOCK_KEY_TABLE,
    CheckpointKeyError,
    convert_control_state_dict,
    to_released_control_state_dict,
)
from longvie.weights.loading import WeightsError, load_control_branch, load_denoiser, overlay_dit_weights


def released_control(transformer, prefix=""):
    control = build_tiny_control(transformer)
    released = to_released_control_state_dict(control.state_dict())
    return control, {prefix + k: v.contiguous() for k, v in released.items()}


def test_block_table_covers_every_block_parameter():
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    block = WanTransformerBlock(64, 128, 2, "rms_norm_across_heads", True, 1e-6, added_kv_proj_dim=64)
    assert sorted(BLOCK_KEY_TABLE.values()) == sorted(block.state_dict())
    # a few names spelled out from SPEC §2, so the table cannot drift silently
    assert BLOCK_KEY_TABLE["norm3.weight"] == "norm2.weight"
    assert BLOCK_KEY_TABLE["cross_attn.k_img.weight"] == "attn2.add_k_proj.weight"
    assert BLOCK_KEY_TABLE["cross_attn.norm_k_img.weight"] == "attn2.norm_added_k.weight"
    assert BLOCK_KEY_TABLE["ffn.0.weight"] == "ffn.net.0.proj.weight"
    assert BLOCK_KEY_TABLE["modulation"] == "scale_shift_table"


def test_released_names_are_the_diffsynth_ones():
    transformer = build_tiny_transformer(0)
    _, released = released_control(transformer)
    assert "control_blocks_dense.0.self_attn.q.weight" in released
    assert "control_blocks_sparse.1.cross_attn.k_img.weight" in released
    assert "control_blocks_dense.1.norm3.bias" in released
    assert "control_blocks_sparse.0.modulation" in released
    assert "control_combine_linears.1.weight" in released
    assert released["control_blocks_dense.0.modulation"].shape == (1, 6, 32)


@pytest.mark.parametrize("prefix", ["", "pipe.dual_controller."])
@torch.no_grad()
def test_control_weights_round_trip_bit_exactly(tmp_path, prefix):
    transformer = build_tiny_transformer(0)
    control, released = released_control(transformer, prefix)
    path = tmp_path / "control.safetensors"
    save_file(released, str(path))
    loaded = load_control_branch(path, transformer.config, torch_dtype=torch.float32)
    assert loaded.depth == 2 and loaded.config.dim == 32 and loaded.config.num_attention_heads == 1
    x = make_inputs()
    assert torch.equal(LongVieDenoiser(transformer, control)(**x), LongVieDenoiser(transformer, loaded)(**x))


def test_missing_control_key_is_named(tmp_path):
    transformer = build_tiny_transformer(0)
    _, released = released_control(transformer)
    del released["control_blocks_sparse.1.cross_attn.norm_k_img.weight"]
    path = tmp_path / "control.safetensors"
    save_file(released, str(path))
    with pytest.raises(CheckpointKeyError) as err:
        load_control_branch(path, transformer.config)
    assert "control_blocks_sparse.1.attn2.norm_added_k.weight" in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_and_misshaped_control_keys_are_listed(tmp_path):
    transformer = build_tiny_transformer(0)
    _, released = released_control(transformer)
    released["control_blocks_dense.0.self_attn.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointKeyError, match="self_attn.extra.weight"):
        convert_control_state_dict(released)
    _, released = released_control(transformer)
    released["control_t_mod.weight"] = torch.zeros(8, 64)
    path = tmp_path / "control.safetensors"
    save_file(released, str(path))
    with pytest.raises(CheckpointKeyError, match=r"control_t_mod.weight: file has \(8, 64\)"):
        load_control_branch(path, transformer.config)


def test_truncated_or_missing_file_names_the_file(tmp_path):
    transformer = build_tiny_transformer(0)
    _, released = released_control(transformer)
    path = tmp_path / "control.safetensors"
    save_file(released, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated"):
        load_control_branch(path, transformer.config)
    with pytest.raises(WeightsError, match="not found"):
        load_control_branch(tmp_path / "nope.safetensors", transformer.config)


@torch.no_grad()
def test_dit_overlay_replaces_only_its_keys(tmp_path):
    transformer = build_tiny_transformer(0)
    before = {k: v.clone() for k, v in transformer.state_dict().items()}
    overlay = tiny_dit_overlay(transformer)
    assert all(k.startswith("blocks.") and ".self_attn." in k for k in overlay)
    path = tmp_path / "dit.safetensors"
    save_file(overlay, str(path))
    replaced = overlay_dit_weights(transformer, path)
    after = transformer.state_dict()
    assert replaced and all(".attn1." in k for k in replaced)
    for key in after:
        if key in replaced:
            assert not torch.equal(after[key], before[key])
        else:
            assert torch.equal(after[key], before[key])
    assert torch.equal(after["blocks.0.attn1.to_q.weight"], overlay["blocks.0.self_attn.q.weight"])


def test_dit_overlay_rejects_unknown_and_misshaped(tmp_path):
    transformer = build_tiny_transformer(0)
    path = tmp_path / "dit.safetensors"
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(CheckpointKeyError, match="blocks.0.attn1.to_q.weight: file has"):
        overlay_dit_weights(transformer, path)
    save_file({"blocks.0.self_attn.qq.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(CheckpointKeyError, match="blocks.0.self_attn.qq.weight"):
        overlay_dit_weights(transformer, path)


@torch.no_grad()
def test_denoiser_from_pretrained_uses_released_files(tiny_checkpoints):
    base_dir, longvie_dir = tiny_checkpoints
    denoiser = load_denoiser(base_dir, longvie_dir / "control.safetensors",
                                               longvie_dir / "dit.safetensors", torch_dtype=torch.float32)
    control = load_file(str(longvie_dir / "control.safetensors"))
    assert torch.equal(denoiser.control.control_blocks_dense[1].attn2.add_k_proj.weight,
                       control["control_blocks_dense.1.cross_attn.k_img.weight"])
    dit = load_file(str(longvie_dir / "dit.safetensors"))
    assert torch.equal(denoiser.transformer.blocks[3].attn1.to_out[0].weight, dit["blocks.3.self_attn.o.weight"])
    # bf16 loading keeps diffusers' fp32 modules (modulation tables) in fp32
    bf16 = load_denoiser(base_dir, longvie_dir / "control.safetensors", torch_dtype=torch.bfloat16)
    assert bf16.control.control_blocks_dense[0].scale_shift_table.dtype == torch.float32
    assert bf16.control.control_blocks_dense[0].attn1.to_q.weight.dtype == torch.bfloat16


def test_release_sized_control_branch_shapes_on_meta():
    """Built from the Wan2.1-I2V-14B config (on the meta device, no memory): the branch is half the
    DiT's width and its released key set has the SPEC §2 names and shapes."""
    from diffusers import WanTransformer3DModel

    from longvie.models.control_branch import LongVieControlBranch

    with torch.device("meta"):
        dit = WanTransformer3DModel(num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
                                    text_dim=4096, ffn_dim=13824, num_layers=40, image_dim=1280,
                                    added_kv_proj_dim=5120)
        control = LongVieControlBranch(**LongVieControlBranch.config_for(dit.config, num_layers=12))
    assert (control.config.dim, control.config.num_attention_heads, control.config.ffn_dim) == (2560, 20, 6912)
    released = to_released_control_state_dict(control.state_dict())
    assert len(released) == 2 * 12 * len(BLOCK_KEY_TABLE) + 8 + 2 * 12
    shapes = {k: tuple(v.shape) for k, v in released.items()}
    assert shapes["control_blocks_dense.11.modulation"] == (1, 6, 2560)
    assert shapes["control_blocks_sparse.0.cross_attn.k_img.weight"] == (2560, 2560)
    assert shapes["control_blocks_dense.0.ffn.0.weight"] == (6912, 2560)
    assert shapes["control_initial_combine_linear_dense.weight"] == (2560, 5120)
    assert shapes["control_t_mod.weight"] == (2560, 5120)
    assert shapes["control_combine_linears.11.weight"] == (5120, 2560)
