"""Control-signal extraction for LongVie 2: depth, point tracks and captions from a driving video.

Scripts (each runs as ``python utils/NAME.py --help`` or ``python -m utils.NAME --help``):
prepare_controls (all in one), get_depth, depth_npy2mp4, get_track, qwen_caption_refine.
"""
