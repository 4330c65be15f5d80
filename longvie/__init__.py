"""LongVie 2: controllable ultra-long video generation on Wan2.1-I2V (diffusers).

Public API (imported lazily so that light tools do not pay for torch/diffusers at import)::

    from longvie import LongViePipeline, LongVieDenoiser, LongVieControlBranch, LongVideoSampler

Subpackages, lowest layer first (a package imports only from those before it; the layering test
``tests/test_layout.py`` enforces it):

    media/      video/image IO, atomic writes            controls/   control-signal primitives, extractors
    models/     denoiser, control branch                 weights/    key tables, loading, download
    presets/    YAML configs, tiny random model          sampling/   one-clip pipeline, schedules, encoders
    examples/   synthetic example (generated)            longvideo/  clip-by-clip sampler, runs, CLI
    train/      three-stage training

``python -m longvie.sample`` (``sample.py``) is the long-video command line.
"""
__version__ = "0.1.0"


class LongVieError(Exception):
    """Base class of the errors this package raises for bad input or a known fault.

    The message states the facts (which file, what was expected, what was found); the command
    lines print it without a traceback and add the fix. Subclasses keep their builtin base
    (``ValueError`` etc.) so that existing ``except`` clauses still catch them.
    """


def log_unexpected_error(err: BaseException, candidates) -> str | None:
    """Append ``err``'s traceback to the first writable log file of ``candidates``; returns its path.

    The command lines print one line naming this file instead of a traceback.
    """
    import datetime
    import traceback
    from pathlib import Path

    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    for log in candidates:
        try:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"\n=== unexpected error ({stamp}) ===\n{text}")
        except OSError:
            continue
        return str(log)
    return None


_LAZY = {
    "LongViePipeline": "longvie.sampling.pipeline",
    "ClipOutput": "longvie.sampling.pipeline",
    "WAN_NEGATIVE_PROMPT": "longvie.sampling.pipeline",
    "LongVieDenoiser": "longvie.models.denoiser",
    "LongVieControlBranch": "longvie.models.control_branch",
    "LongVideoSampler": "longvie.longvideo.sampler",
    "LongVideoSettings": "longvie.longvideo.sampler",
}
__all__ = sorted([*_LAZY, "LongVieError", "log_unexpected_error"])


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'longvie' has no attribute {name!r}")
