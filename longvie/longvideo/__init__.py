"""Ultra-long video: the clip-by-clip sampler, the run directory (manifest, states, lock, resume),
validation of every input before a model loads (``validation``: inputs; ``preflight``: settings,
device, config file, output folder, weight headers), and the ``python -m longvie.sample`` command line.

May import: ``media``, ``controls``, ``presets``, ``examples``; lazily ``weights`` and ``models``
(header checks, shapes on the meta device) and, once inputs are valid, ``sampling``.
"""
from .run_state import RedoRequest, RunDir, RunLockedError, RunManifestError, RunMismatchError
from .sampler import LongVideoResult, LongVideoSampler, LongVideoSettings, load_run_frames
from .validation import ClipCondition, InputValidationError, load_conditions, validate_inputs

__all__ = ["ClipCondition", "InputValidationError", "LongVideoResult", "LongVideoSampler", "LongVideoSettings",
           "RedoRequest", "RunDir", "RunLockedError", "RunManifestError", "RunMismatchError", "load_conditions",
           "load_run_frames", "validate_inputs"]
