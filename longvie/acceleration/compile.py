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

RECOMPILE_LIMIT = 64


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


def _hooked(module: torch.nn.Module) -> bool:
    """A diffusers or accelerate hook sits on ``module`` (it would be traced into the block's graph)."""
    registry = getattr(module, "_diffusers_hook", None)
    return bool(getattr(registry, "hooks", None)) or hasattr(module, "_hf_hook")


def compile_targets(denoiser: LongVieDenoiser) -> tuple[list[str], list[str]]:
    """(names of the repeated blocks that :func:`apply_regional_compile` compiles, names it leaves eager
    because a hook sits on them)."""
    repeated = set(denoiser._repeated_blocks)
    compiled, skipped = [], []
    for name, module in denoiser.named_modules():
        if type(module).__name__ in repeated:
            (skipped if any(_hooked(m) for m in module.modules()) else compiled).append(name)
    return compiled, skipped


def apply_regional_compile(denoiser: LongVieDenoiser, config: CompileConfig | None = None) -> int:
    """Compile every repeated block of ``denoiser`` in place (``nn.Module.compile`` on each block, as diffusers'
    ``compile_repeated_blocks`` does), except blocks that carry a hook (offload hooks stay outside the
    graphs; see :func:`compile_targets`). Returns the number of compiled blocks."""
    config = config or CompileConfig()
    kwargs = dict(backend=config.backend, fullgraph=config.fullgraph, dynamic=config.dynamic)
    if config.mode is not None:
        kwargs["mode"] = config.mode
    # Every compiled block shares one code object (nn.Module._call_impl), so each block kind x clip shape x
    # weight dtype is one entry of its cache; dynamo's default limit (8) would silently send the rest to eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    compiled, _ = compile_targets(denoiser)
    for name in compiled:
        denoiser.get_submodule(name).compile(**kwargs)
    return len(compiled)


def remove_regional_compile(denoiser: LongVieDenoiser) -> None:
    """Back to eager blocks (undoes :func:`apply_regional_compile`)."""
    repeated = set(denoiser._repeated_blocks)
    for module in denoiser.modules():
        if type(module).__name__ in repeated:
            module._compiled_call_impl = None


def inductor_available(device: torch.device | str = "cpu") -> str | None:
    """None when inductor can generate code for ``device`` here, else the reason (no C++ compiler for
    CPU code, no Triton for CUDA code, ...)."""
    import shutil

    if torch.device(device).type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return "torch.utils._triton is missing"
        return None if has_triton() else "Triton is not installed (inductor generates CUDA kernels with Triton)"

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
