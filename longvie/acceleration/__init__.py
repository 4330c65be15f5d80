"""Speed and memory for the denoiser, applied from outside like diffusers hooks (``apply_x(denoiser,
XConfig)``): attention backends, offloading, FP8 storage (``fp8``), regional compilation
(``compile``), step caching (``step_cache``), sequence/CFG parallelism (``parallel``). ``models/``
never imports it.

May import: ``longvie.models``, ``longvie.weights``, ``longvie.presets``.
"""
