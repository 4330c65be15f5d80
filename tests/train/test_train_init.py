"""Stage-1 half-copy initialisation (SPEC §2) and trainable-parameter selection (SPEC §6)."""
import pytest
import torch

from longvie.models.control_branch import LongVieControlBranch
from longvie.models.denoiser import LongVieDenoiser
from longvie.presets.tiny import build_tiny_transformer
from longvie.train.trainer import select_trainable


@pytest.fixture(scope="module")
def transformer():
    return build_tiny_transformer()


def test_half_copy_takes_even_slices_for_dense_and_odd_for_sparse(transformer):
    control = LongVieControlBranch(**LongVieControlBranch.config_for(transformer.config, 2))
    torch.nn.init.normal_(control.control_combine_linears[0].weight)  # must be zeroed again
    control.init_half_copy(transformer)
    for i in range(control.depth):
        source = transformer.blocks[i].state_dict()
        dense, sparse = control.control_blocks_dense[i].state_dict(), control.control_blocks_sparse[i].state_dict()
        assert set(dense) == set(source)
        for name, tensor in source.items():
            expected_dense, expected_sparse = tensor, tensor
            for axis, size in enumerate(dense[name].shape):  # every axis that is halved: 0::2 / 1::2
                if tensor.shape[axis] == 2 * size:
                    expected_dense = expected_dense.index_select(axis, torch.arange(0, tensor.shape[axis], 2))
                    expected_sparse = expected_sparse.index_select(axis, torch.arange(1, tensor.shape[axis], 2))
            assert torch.equal(dense[name], expected_dense), name
            assert torch.equal(sparse[name], expected_sparse), name
        # Spot checks written out by hand: a Linear halves both axes, the modulation its last one.
        q = transformer.blocks[i].attn1.to_q.weight
        assert torch.equal(control.control_blocks_dense[i].attn1.to_q.weight, q[0::2, 0::2])
        assert torch.equal(control.control_blocks_sparse[i].attn1.to_q.weight, q[1::2, 1::2])
        table = transformer.blocks[i].scale_shift_table
        assert torch.equal(control.control_blocks_sparse[i].scale_shift_table, table[..., 1::2])
    for linear in [control.control_initial_combine_linear_dense, control.control_initial_combine_linear_sparse,
                   *control.control_combine_linears]:
        assert not linear.weight.any() and not linear.bias.any()
    assert control.control_text_linear.weight.any() and control.control_t_mod.weight.any()


def test_trainable_groups(transformer):
    control = LongVieControlBranch(**LongVieControlBranch.config_for(transformer.config, 2))
    denoiser = LongVieDenoiser(transformer, control)
    names = select_trainable(denoiser, ["control"])
    assert names == {f"control.{n}" for n, _ in control.named_parameters()}
    assert not any(p.requires_grad for p in transformer.parameters())

    names = select_trainable(denoiser, ["control", "dit_self_attention"])
    attn = {n for n in names if n.startswith("transformer.")}
    per_block = {n.split(".", 4)[-1] for n in attn}
    assert per_block == {"to_q.weight", "to_q.bias", "to_k.weight", "to_k.bias", "to_v.weight", "to_v.bias",
                         "to_out.0.weight", "to_out.0.bias", "norm_q.weight", "norm_k.weight"}
    assert {n.split(".")[2] for n in attn} == {str(i) for i in range(len(transformer.blocks))}
    assert all(".attn1." in n for n in attn)
    assert not transformer.blocks[0].attn2.to_q.weight.requires_grad
    assert not transformer.blocks[0].ffn.net[0].proj.weight.requires_grad
    with pytest.raises(KeyError):
        select_trainable(denoiser, ["everything"])
