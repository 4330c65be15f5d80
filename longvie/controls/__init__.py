"""Control signals (SPEC §5): the numpy primitives every depth and track video is built from
(``primitives``), and the extraction back-ends the ``utils/`` scripts call: depth estimators
(Video Depth Anything, Depth Anything V2), point trackers, driving-video reading, captioning.

May import: ``longvie.media``. Model back-ends import their libraries lazily.
"""
from .primitives import (
                         CLIP_FRAMES,
                         CLIP_STRIDE,
                         CONSTANT_DEPTH_GREY,
                         DEFAULT_GRID,
                         clip_ranges,
                         default_point_size,
                         depth_bounds,
                         disparity_to_grey,
                         grey_to_rgb,
                         grid_points,
                         normalize_depth,
                         render_tracks,
                         track_colors,
                         usable_frames,
)

__all__ = ["CLIP_FRAMES", "CLIP_STRIDE", "CONSTANT_DEPTH_GREY", "DEFAULT_GRID", "clip_ranges", "default_point_size", "depth_bounds",
           "disparity_to_grey", "grey_to_rgb", "grid_points", "normalize_depth", "render_tracks", "track_colors",
           "usable_frames"]
