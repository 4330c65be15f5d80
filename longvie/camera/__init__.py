"""From one photo to a walk through its world: camera paths rendered into LongVie's controls.

A photo's metric depth (Depth Anything V2 through transformers, or a depth map you have) is lifted
to a coloured point cloud; a camera path (a preset move, a RealEstate10K / CameraCtrl pose file, or
keyframes) renders it into the two controls LongVie 2 was trained on: depth (z-buffer splatting,
holes filled, normalised over the whole path as extraction does) and point tracks (a 50x50 grid per
clip lifted to 3D, drawn by the extraction pipeline's renderer). ``--explore`` generates the video
with a 3D memory that grows with every clip.

Modules: ``paths`` (camera paths), ``geometry`` (intrinsics, depth files, point clouds), ``depth``
(the metric depth model), ``render`` (splatting, tracks), ``folder`` (the condition folder, the
library entry point for the command line and the app), ``memory`` and ``explore`` (--explore),
``preview`` (plots and side-by-side videos). The command line is ``python -m longvie.camera``.

May import: ``media``, ``controls``, ``presets`` (the tiny depth model), ``longvideo`` (--explore drives
its sampler). Heavy libraries (torch, kornia, transformers, matplotlib) are imported inside functions.
"""
_LAZY = {
    "PathSpec": "longvie.camera.folder",
    "CameraSettings": "longvie.camera.folder",
    "CameraFolder": "longvie.camera.folder",
    "make_camera_folder": "longvie.camera.folder",
    "plan_camera": "longvie.camera.folder",
    "settings_from_config": "longvie.camera.folder",
    "STAGES": "longvie.camera.folder",
    "explore": "longvie.camera.explore",
    "ExploreControls": "longvie.camera.explore",
    "sampling_config": "longvie.camera.explore",
    "MemorySettings": "longvie.camera.memory",
    "CameraPath": "longvie.camera.paths",
    "PRESETS": "longvie.camera.paths",
    "CameraPathError": "longvie.camera.paths",
    "CameraInputError": "longvie.camera.geometry",
    "Intrinsics": "longvie.camera.geometry",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'longvie.camera' has no attribute {name!r}")
