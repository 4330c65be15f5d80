"""The LongVie 2 networks: the denoiser (Wan2.1-I2V DiT + history tokens + control injection) and the
dual control branch. What a model researcher edits.

May import: torch, diffusers. Nothing else of ``longvie``.
"""
from .control_branch import LongVieControlBranch
from .denoiser import LongVieDenoiser, rotary_embedding

__all__ = ["LongVieControlBranch", "LongVieDenoiser", "rotary_embedding"]
