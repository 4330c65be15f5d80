"""LongVie 2: controllable ultra-long video generation on Wan2.1-I2V (diffusers).

Public API (imported lazily so that light tools do not pay for torch/diffusers at import):

    from longvie import LongViePipeline, LongVieDenoiser, LongVieControlBranch
"""
__version__ = "0.1.0"

_LAZY = {
    "LongViePipeline": "longvie.pipeline",
    "ClipOutput": "longvie.pipeline",
    "WAN_NEGATIVE_PROMPT": "longvie.pipeline",
    "LongVieDenoiser": "longvie.denoiser",
    "LongVieControlBranch": "longvie.control_branch",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'longvie' has no attribute {name!r}")
