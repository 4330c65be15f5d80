"""Example inputs generated from code (no downloaded data): see :mod:`longvie.examples.synthetic`.

May import: ``longvie.media``, ``longvie.controls``.
"""
