"""LongVie 2 dual control branch: a dense (depth) and a sparse (point-track) half-width DiT.

SPEC §2. Each branch is a stack of diffusers ``WanTransformerBlock``s at half the main DiT's
width (5120 -> 2560, 40 -> 20 heads, so the head dim and therefore the RoPE stay those of the
main model). The branch tokens come from the main DiT's patch embedding of the 36-channel
control input, go through a zero-initialised Linear to half width, and after main block ``i`` the
sum of both branches is projected back by a zero-initialised Linear and added to the main stream.

Parameter names outside the blocks are those of the released ``control.safetensors``; inside the
blocks they are diffusers' (see :mod:`longvie.weights.checkpoint_keys`).
"""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import nn


class LongVieControlBranch(ModelMixin, ConfigMixin, PeftAdapterMixin):  # PEFT: LoRAs (weights/lora.py)
    """Dense + sparse control branches.

    Args:
        main_dim: width of the main DiT (5120 for Wan2.1-14B).
        dim: width of each branch (main_dim // 2 in the release).
        num_attention_heads: heads of each branch (main heads // 2).
        ffn_dim: feed-forward width of each branch (main ffn // 2).
        num_layers: number of control blocks per branch (12 in the release).
        eps: LayerNorm / RMSNorm epsilon.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["WanTransformerBlock"]
    _keep_in_fp32_modules = ["scale_shift_table", "norm1", "norm2", "norm3"]
    _repeated_blocks = ["WanTransformerBlock"]  # regional compilation (ModelMixin.compile_repeated_blocks)
    _skip_layerwise_casting_patterns = ["norm", "control_t_mod"]

    @register_to_config
    def __init__(
        self,
        main_dim: int = 5120,
        dim: int = 2560,
        num_attention_heads: int = 20,
        ffn_dim: int = 6912,
        num_layers: int = 12,
        eps: float = 1e-6,
    ):
        super().__init__()

        def make_block() -> WanTransformerBlock:
            # cross_attn_norm=True: affine LayerNorm before cross-attention, like the main DiT;
            # added_kv_proj_dim=dim: the image tokens arrive already projected to branch width.
            return WanTransformerBlock(dim, ffn_dim, num_attention_heads, "rms_norm_across_heads",
                                       True, eps, added_kv_proj_dim=dim)

        self.control_blocks_dense = nn.ModuleList([make_block() for _ in range(num_layers)])
        self.control_blocks_sparse = nn.ModuleList([make_block() for _ in range(num_layers)])
        self.control_initial_combine_linear_dense = nn.Linear(main_dim, dim)
        self.control_initial_combine_linear_sparse = nn.Linear(main_dim, dim)
        self.control_text_linear = nn.Linear(main_dim, dim)
        self.control_t_mod = nn.Linear(main_dim, dim)
        self.control_combine_linears = nn.ModuleList([nn.Linear(dim, main_dim) for _ in range(num_layers)])
        self.zero_init_adapters()
        self.gradient_checkpointing = False

    @property
    def depth(self) -> int:
        return len(self.control_blocks_dense)

    def zero_init_adapters(self) -> None:
        """Zero the input and output adapters (SPEC §2): a fresh branch changes nothing."""
        for linear in [self.control_initial_combine_linear_dense, self.control_initial_combine_linear_sparse,
                       *self.control_combine_linears]:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    # Where training-time dense weakening scales the dense tokens: "after" the input Linear (default)
    # or "before" it (upstream's stage-3 code). Set by the trainer from degradation.dense_weakening_position.
    dense_weakening_position = "after"

    def prepare_tokens(self, dense_tokens: torch.Tensor, sparse_tokens: torch.Tensor,
                       dense_scale: torch.Tensor | float | None = None):
        """Project the main-width control tokens to branch width (once per clip at inference).

        Args:
            dense_tokens, sparse_tokens: (B, N, main_dim) patch embeddings of the control inputs.
            dense_scale: optional (B,) or scalar multiplier of the dense tokens (stage-1
                "feature-level dense weakening", SPEC §6); None at inference. Applied to the output of
                control_initial_combine_linear_dense, or to its input when ``dense_weakening_position``
                is "before" (upstream's stage-3 code; the Linear's bias makes the order matter).
        Returns:
            dense (B, N, dim), sparse (B, N, dim).
        """
        if dense_scale is not None and torch.is_tensor(dense_scale) and dense_scale.ndim == 1:
            dense_scale = dense_scale.view(-1, 1, 1)
        before = dense_scale is not None and self.dense_weakening_position == "before"
        dense = self.control_initial_combine_linear_dense(dense_tokens * dense_scale if before else dense_tokens)
        if dense_scale is not None and not before:
            dense = dense * dense_scale
        return dense, self.control_initial_combine_linear_sparse(sparse_tokens)

    def prepare(self, dense_tokens: torch.Tensor, sparse_tokens: torch.Tensor, context: torch.Tensor,
                t_mod: torch.Tensor, dense_scale: torch.Tensor | float | None = None):
        """All input projections of one call: :meth:`prepare_tokens`, then the context (B, L, main_dim)
        and timestep modulation (B, 6, main_dim) projections.

        Returns:
            dense (B, N, dim), sparse (B, N, dim), control context (B, L, dim), control t_mod (B, 6, dim).
        """
        dense, sparse = self.prepare_tokens(dense_tokens, sparse_tokens, dense_scale)
        return dense, sparse, self.control_text_linear(context), self.control_t_mod(t_mod)

    def step(self, index: int, dense: torch.Tensor, sparse: torch.Tensor, context: torch.Tensor,
             t_mod: torch.Tensor, rotary_emb: tuple[torch.Tensor, torch.Tensor]):
        """Run control block ``index`` of both branches.

        Returns the updated dense and sparse tokens (B, N, dim) and the residual (B, N, main_dim)
        to add to the main stream's current-clip tokens.
        """
        dense_block = self.control_blocks_dense[index]
        sparse_block = self.control_blocks_sparse[index]
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            dense = self._gradient_checkpointing_func(dense_block, dense, context, t_mod, rotary_emb)
            sparse = self._gradient_checkpointing_func(sparse_block, sparse, context, t_mod, rotary_emb)
        else:
            dense = dense_block(dense, context, t_mod, rotary_emb)
            sparse = sparse_block(sparse, context, t_mod, rotary_emb)
        return dense, sparse, self.control_combine_linears[index](dense + sparse)

    @classmethod
    def config_for(cls, transformer_config, num_layers: int) -> dict:
        """Branch config derived from a diffusers ``WanTransformer3DModel`` config (half width)."""
        heads = transformer_config.num_attention_heads
        main_dim = heads * transformer_config.attention_head_dim
        if heads % 2 or transformer_config.ffn_dim % 2:
            raise ValueError(f"cannot halve a DiT with {heads} heads and ffn {transformer_config.ffn_dim}")
        return dict(main_dim=main_dim, dim=main_dim // 2, num_attention_heads=heads // 2,
                    ffn_dim=transformer_config.ffn_dim // 2, num_layers=num_layers,
                    eps=transformer_config.eps)

    @torch.no_grad()
    def init_half_copy(self, transformer) -> None:
        """Stage-1 initialisation ("half copy", LongVie, arXiv 2508.03694).

        Control block ``i`` starts from main block ``i`` with every weight tensor split along its
        feature dimensions: even indices go to the dense block, odd indices to the sparse block.
        The input/output adapters are zeroed; the context and t_mod projections keep their
        default (random) init.
        """
        if self.depth > len(transformer.blocks):
            raise ValueError(f"control depth {self.depth} exceeds the DiT's {len(transformer.blocks)} blocks")
        for i in range(self.depth):
            source = transformer.blocks[i].state_dict()
            for branch, offset in ((self.control_blocks_dense[i], 0), (self.control_blocks_sparse[i], 1)):
                target = branch.state_dict()
                for name, tensor in source.items():
                    sliced = tensor
                    for axis, size in enumerate(target[name].shape):
                        if tensor.shape[axis] == 2 * size:
                            keep = torch.arange(offset, tensor.shape[axis], 2, device=tensor.device)
                            sliced = sliced.index_select(axis, keep)
                        elif tensor.shape[axis] != size:
                            raise ValueError(f"half copy: {name} {tuple(tensor.shape)} vs {tuple(target[name].shape)}")
                    target[name].copy_(sliced)
        self.zero_init_adapters()
