"""Measurements (``python -m longvie.benchmark``): speed per stage and mode against the exact path
(``speed``), and GPU/host memory estimates that need no GPU (``memory``, ``--estimate-memory``).

May import: every other subpackage except ``app``.
"""
