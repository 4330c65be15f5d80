"""A photo with its exact metric depth, from the repository's synthetic scene (no model, no download).

    python -m longvie.camera.example OUT [--height 480] [--width 832]

writes ``OUT/photo.png`` (the first frame of :mod:`longvie.examples.synthetic`'s scene) and
``OUT/depth.npy`` (its depth in metres along the optical axis; the sky, which has none, is set to
twice the farthest ground distance). The scene's camera has a 70 degree horizontal field of view
(``--fov 70``). It is the input of docs/camera.md's example and of the tests.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..examples.synthetic import FIELD_OF_VIEW_DEG as SYNTHETIC_FOV_DEG

__all__ = ["SYNTHETIC_FOV_DEG", "synthetic_photo", "write_synthetic_photo", "main"]


def synthetic_photo(height: int = 480, width: int = 832, clips: int = 3,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(photo (H, W, 3) uint8, depth (H, W) float32 metres)`` of the synthetic scene's first frame."""
    from ..examples.synthetic import camera_at, make_scene, render

    rgb, depth = render(make_scene(clips, seed), camera_at(0.0, height, width))
    finite = np.isfinite(depth)
    depth = np.where(finite, depth, 2.0 * depth[finite].max())
    return rgb, depth.astype(np.float32)


def write_synthetic_photo(out: str | Path, height: int = 480, width: int = 832) -> tuple[Path, Path]:
    """Write ``photo.png`` and ``depth.npy`` into ``out`` (a new, empty or earlier example folder); returns
    their paths."""
    from ..controls.condition_folder import save_png
    from ..media.atomic import atomic_save_npy
    from ..media.output_dir import claim_output_dir, mark_output_dir

    out = mark_output_dir(claim_output_dir(out, "camera example folder", kind="camera-example"), "camera-example")
    rgb, depth = synthetic_photo(height, width)
    save_png(out / "photo.png", rgb)
    atomic_save_npy(out / "depth.npy", depth)
    return out / "photo.png", out / "depth.npy"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longvie.camera.example", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    args = parser.parse_args(argv)
    from .. import LongVieError

    try:
        photo, depth = write_synthetic_photo(args.out, args.height, args.width)
    except (LongVieError, ValueError) as err:
        print(f"error: {err}")
        return 2
    print(f"wrote {photo} and {depth} (metres; use --fov {SYNTHETIC_FOV_DEG:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
