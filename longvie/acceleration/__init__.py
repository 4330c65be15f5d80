"""Speed and memory for the denoiser, applied from outside like diffusers hooks (``apply_x(denoiser,
XConfig)``): attention backends, offloading, FP8 storage, compilation, step caching, sequence/CFG
parallelism. ``models/`` never imports it.

May import: ``longvie.models``, ``longvie.weights``, ``longvie.presets``.
"""
