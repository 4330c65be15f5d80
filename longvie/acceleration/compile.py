"""Regional compilation: ``torch.compile`` on each repeated block (40 main + 2 x 12 control
``WanTransformerBlock``s) instead of the whole denoiser.

All blocks of one width share one compiled graph (parameters are graph inputs), so compiling
takes two block compilations (main width, control width) rather than one of the whole 64-block
model, and the per-clip Python code around the blocks (history, control injection, caching,
sequence parallelism) stays eager. Same math: checked against eager in
tests/acceleration/test_compile.py. See https://docs.pytorch.org/tutorials/recipes/regional_compilation.html
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.denoiser import LongVieDenoiser


@dataclass
class CompileConfig:
    """Arguments of ``torch.compile`` for each block.

    backend: "inductor" (generated kernels; needs a C++ compiler on CPU and Triton on GPU), or
        "aot_eager"/"eager" for debugging.
    mode: None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs".
    fullgraph: refuse graph breaks inside a block (the block is one graph in diffusers 0.42).
    dynamic: False compiles for the clip's fixed token count (recompiles once if it changes).
    """

    backend: str = "inductor"
    mode: str | None = None
    fullgraph: bool = True
    dynamic: bool = False


def apply_regional_compile(denoiser: LongVieDenoiser, config: CompileConfig | None = None) -> int:
    """Compile every repeated block of ``denoiser`` in place (``ModelMixin.compile_repeated_blocks`` on the
    transformer and on the control branch). Returns the number of compiled blocks."""
    config = config or CompileConfig()
    kwargs = dict(backend=config.backend, fullgraph=config.fullgraph, dynamic=config.dynamic)
    if config.mode is not None:
        kwargs["mode"] = config.mode
    denoiser.transformer.compile_repeated_blocks(**kwargs)
    denoiser.control.compile_repeated_blocks(**kwargs)
    repeated = set(denoiser._repeated_blocks)
    return sum(type(m).__name__ in repeated for m in denoiser.modules())


def remove_regional_compile(denoiser: LongVieDenoiser) -> None:
    """Back to eager blocks (undoes :func:`apply_regional_compile`)."""
    repeated = set(denoiser._repeated_blocks)
    for module in denoiser.modules():
        if type(module).__name__ in repeated:
            module._compiled_call_impl = None


def inductor_available() -> str | None:
    """None when inductor can generate CPU code here, else the reason (no C++ compiler, ...)."""
    import shutil

    try:
        from torch._inductor import config as inductor_config
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return f"torch._inductor does not import: {err}"
    compiler = inductor_config.cpp.cxx[0] if isinstance(inductor_config.cpp.cxx, tuple) else None
    if not any(shutil.which(name) for name in filter(None, [compiler, "g++", "c++", "clang++"])):
        return "no C++ compiler (g++/clang++) on PATH"
    if not hasattr(torch, "compile"):
        return "torch.compile is missing"
    return None
