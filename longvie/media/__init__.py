"""Pixels on disk: reading and writing videos and images, fitting frames to a size, atomic writes.

May import: numpy, PIL, imageio/PyAV. Nothing else of ``longvie``.
"""
