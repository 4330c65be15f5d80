"""Presets: the YAML configs in ``configs/`` (loading, merging, dtype names) and the tiny random-weight
model with its checkpoint writer, which ``--preset tiny`` runs on a CPU (a product feature, not
test scaffolding).

May import: ``longvie.models``, ``longvie.weights``.
"""
