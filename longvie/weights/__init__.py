"""Checkpoints on disk: key tables (released/DiffSynth and original Wan umT5/CLIP/VAE), strict loading,
the original Wan2.1 layout, header-only completeness checks and the download logic behind
``download_wan2.1.py``.

May import: ``longvie.models``. Layering inside: files <- state_dict <- original_layout <- loading.
"""
