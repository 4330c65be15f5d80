"""Evaluation of generated long videos: the paper's metrics, long-video drift diagnostics, reports and
the benchmark runner (``python -m longvie.eval``).

May import: everything below ``longvideo`` and ``longvideo`` itself.
"""
