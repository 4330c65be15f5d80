"""Does the video follow the camera? Camera adherence of a video made from a camera folder (camera.json).

The camera path is recovered from the generated frames and compared with the requested one, the way
camera-control papers evaluate (CameraCtrl, arXiv 2404.02101 §4.1: rotation error between generated
and requested relative rotations; HunyuanWorld-Voyager, arXiv 2506.04225, scores camera control on
WorldScore the same way):

1. per clip, points are tracked from the clip's first frame with the project's tracker
   (:mod:`longvie.controls.point_tracking`, Lucas-Kanade by default: weight-free, offline) on
   Shi-Tomasi corners (``cv2.goodFeaturesToTrack``; a grid where the frame has too few);
2. for frame pairs (first frame, frame t) the relative pose comes from OpenCV's essential matrix with the
   known intrinsics (``findEssentialMat`` with RANSAC, then ``recoverPose``). When a pure rotation
   explains the tracks (median residual of the rotation-only homography K R K^-1 below 1 px) there is no
   measurable parallax: the rotation comes from that homography and the translation direction is unknown;
3. rotation error = the geodesic angle of R_video R_requested^T (degrees); translation-direction error =
   the angle between the recovered and the requested translation (degrees), scored only where the
   requested baseline is at least 2 % of the scene's median depth (below that the direction is noise);
   where the request moves that much but the video shows no parallax, the error counts as 90 degrees.

Per clip: the mean over its pairs (and CameraCtrl's sum of rotation errors); for the whole video: the
mean over all pairs. A clip whose mean rotation error exceeds :data:`ROTATION_BOUND_DEG` or whose mean
translation-direction error exceeds :data:`TRANSLATION_BOUND_DEG` is flagged as not following the path.
Monocular video has no scale, so the recovered path drawn in ``camera_paths.png`` takes each pair's
baseline length from the request and its direction from the video.

``python -m longvie.eval`` runs this as a report section (:mod:`longvie.eval.sections`) whenever the
video's condition folder holds camera.json: ``camera`` in metrics.json, a section in metrics.md,
``camera_paths.png`` and a part of the console line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..camera.geometry import Intrinsics
from ..camera.paths import camera_centers, relative_pose, rotation_angle_deg
from ..controls.primitives import grid_points

__all__ = ["ROTATION_BOUND_DEG", "TRANSLATION_BOUND_DEG", "MIN_BASELINE_FRACTION", "find_camera_json",
           "relative_pose_from_points", "camera_adherence", "write_camera_plot", "KEY", "compute", "markdown",
           "summary"]

ROTATION_BOUND_DEG = 5.0
TRANSLATION_BOUND_DEG = 30.0
MIN_BASELINE_FRACTION = 0.02  # translation direction is scored from this baseline / median scene depth on
NO_PARALLAX_PX = 1.0  # median residual of the rotation-only model below this: no measurable translation
MIN_POINTS = 15
PAIR_STRIDE = 4  # frame pairs (0, t) every PAIR_STRIDE frames, and the clip's last frame


def find_camera_json(depth_videos=(), prompts: str | Path | None = None,
                     generated: str | Path | None = None) -> Path | None:
    """camera.json of the condition folder a video was made from: next to ``prompts`` (cond.json), next
    to the control videos a run recorded, or above a run directory (``--explore`` runs in OUT/run)."""
    candidates = []
    if prompts is not None:
        candidates.append(Path(prompts).parent)
    candidates += [Path(p).parent for p in list(depth_videos)[:1]]
    if generated is not None:
        generated = Path(generated)
        candidates += [generated.parent] if generated.is_dir() else []
    for folder in candidates:
        if (folder / "camera.json").is_file():
            return folder / "camera.json"
    return None


def _rotation_from_homography(homography: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The rotation closest to K^-1 H K (the homography of a pure rotation is K R K^-1)."""
    m = np.linalg.inv(matrix) @ homography @ matrix
    m = m / np.cbrt(np.linalg.det(m))
    u, _, vt = np.linalg.svd(m)
    rotation = u @ vt
    return rotation if np.linalg.det(rotation) > 0 else -rotation


def relative_pose_from_points(p0: np.ndarray, p1: np.ndarray, matrix: np.ndarray) -> dict | None:
    """Relative pose of camera 1 w.r.t. camera 0 from matched pixels (N, 2): ``x1 = R x0 + t``.

    Returns ``{"R", "t" (unit, None without parallax), "model", "inliers"}``, or None when it cannot be
    estimated (too few points, degenerate geometry).
    """
    import cv2

    if len(p0) < MIN_POINTS:
        return None
    p0 = np.ascontiguousarray(p0, dtype=np.float64)
    p1 = np.ascontiguousarray(p1, dtype=np.float64)
    homography, h_mask = cv2.findHomography(p0, p1, cv2.RANSAC, 1.5)
    if homography is not None:
        rotation = _rotation_from_homography(homography, matrix)
        mapped = (matrix @ rotation @ np.linalg.inv(matrix) @ np.c_[p0, np.ones(len(p0))].T).T
        residual = np.linalg.norm(mapped[:, :2] / mapped[:, 2:] - p1, axis=1)
        if np.median(residual) < NO_PARALLAX_PX:
            return {"R": rotation, "t": None, "model": "rotation", "inliers": int((residual < 2.0).sum())}
    essential, mask = cv2.findEssentialMat(p0, p1, matrix, method=cv2.RANSAC, prob=0.999, threshold=1.0)
    if essential is None or essential.shape[0] < 3:
        return None
    essential = essential[:3]
    count, rotation, translation, mask = cv2.recoverPose(essential, p0, p1, matrix, mask=mask)
    if count < MIN_POINTS // 2:
        return None
    translation = translation.reshape(3)
    return {"R": rotation, "t": translation / max(np.linalg.norm(translation), 1e-12), "model": "essential",
            "inliers": int(count)}


def _query_points(frame: np.ndarray) -> np.ndarray:
    import cv2

    height, width = frame.shape[:2]
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    corners = cv2.goodFeaturesToTrack(grey, maxCorners=600, qualityLevel=0.005, minDistance=max(3, width // 80),
                                      blockSize=5)
    if corners is None or len(corners) < 4 * MIN_POINTS:
        return grid_points(height, width, 24)
    return corners.reshape(-1, 2).astype(np.float32)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cosine = float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def camera_adherence(frames: np.ndarray, camera: dict, tracker: Callable | None = None,
                     pair_stride: int = PAIR_STRIDE) -> dict:
    """Camera adherence of ``frames`` (T, H, W, 3) uint8 against a camera.json dict (see the module docstring).

    Returns a JSON-ready dict: ``per_clip`` (rotation_error_deg, translation_direction_error_deg,
    rotation_error_sum_deg, pairs, follows_path), ``video`` (means over all pairs, flagged clips,
    follows_path) and the requested/recovered camera centres for the plot.
    """
    from ..controls.point_tracking import LucasKanadeTracker

    tracker = tracker or LucasKanadeTracker()
    height, width = frames.shape[1:3]
    intr = camera["intrinsics"]
    intrinsics = Intrinsics(intr["fx"], intr["fy"], intr["cx"], intr["cy"], intr["width"], intr["height"])
    if (intr["width"], intr["height"]) != (width, height):  # the sampler stretched the controls to its size
        intrinsics = intrinsics.resized(width, height)
    matrix = intrinsics.matrix()
    w2c = np.asarray(camera["frames_w2c"], dtype=np.float64)
    depth_scale = float(camera.get("scene_depth_median") or 1.0)
    ranges = [tuple(r) for r in camera["clip_ranges"] if r[1] <= min(len(frames), len(w2c))]
    if not ranges:
        raise ValueError(f"the video has {len(frames)} frames, fewer than camera.json's first clip "
                         f"({camera['clip_ranges'][0]})")

    per_clip, all_rot, all_trans = [], [], []
    recovered = {ranges[0][0]: w2c[ranges[0][0]]}
    for start, end in ranges:
        clip = frames[start:end]
        recovered.setdefault(start, w2c[start])  # a chain broken by a failed pair restarts from the request
        points = _query_points(clip[0])
        tracks, visible = tracker(clip, points)
        rot_errors, trans_errors, models = [], [], []
        for t in sorted(set(range(pair_stride, end - start, pair_stride)) | {end - start - 1}):
            seen = visible[0] & visible[t] & np.isfinite(tracks[t]).all(-1)
            estimate = relative_pose_from_points(tracks[0][seen], tracks[t][seen], matrix)
            requested = relative_pose(w2c[start], w2c[start + t])
            baseline = float(np.linalg.norm(requested[:3, 3]))
            if estimate is None:
                models.append("failed")
                continue
            models.append(estimate["model"])
            rot_errors.append(rotation_angle_deg(estimate["R"] @ requested[:3, :3].T))
            if baseline >= MIN_BASELINE_FRACTION * depth_scale:
                trans_errors.append(90.0 if estimate["t"] is None else _angle_deg(estimate["t"], requested[:3, 3]))
            step = np.eye(4)
            step[:3, :3] = estimate["R"]
            if estimate["t"] is not None:
                step[:3, 3] = estimate["t"] * baseline  # direction from the video, length from the request
            recovered[start + t] = step @ recovered[start]
        rotation = float(np.mean(rot_errors)) if rot_errors else None
        translation = float(np.mean(trans_errors)) if trans_errors else None
        follows = (rotation is not None and rotation <= ROTATION_BOUND_DEG
                   and (translation is None or translation <= TRANSLATION_BOUND_DEG))
        per_clip.append({"frames": [int(start), int(end)], "rotation_error_deg": rotation,
                         "rotation_error_sum_deg": float(np.sum(rot_errors)) if rot_errors else None,
                         "translation_direction_error_deg": translation, "pairs": len(models),
                         "pairs_failed": models.count("failed"), "pairs_without_parallax": models.count("rotation"),
                         "follows_path": bool(follows)})
        all_rot += rot_errors
        all_trans += trans_errors
    frames_done = sorted(recovered)
    flagged = [i for i, c in enumerate(per_clip) if not c["follows_path"]]
    return {
        "camera_json": camera.get("_path"),
        "tracker": type(tracker).__name__,
        "definition": "per frame pair (clip's first frame, frame t): rotation error = angle of R_video R_requested^T; "
                      "translation-direction error = angle between recovered and requested translation (scored from "
                      f"a baseline of {MIN_BASELINE_FRACTION:g} x the median scene depth); OpenCV essential matrix "
                      "with the known intrinsics on points tracked from each clip's first frame",
        "bounds": {"rotation_error_deg": ROTATION_BOUND_DEG, "translation_direction_error_deg": TRANSLATION_BOUND_DEG},
        "per_clip": per_clip,
        "video": {"rotation_error_deg": float(np.mean(all_rot)) if all_rot else None,
                  "translation_direction_error_deg": float(np.mean(all_trans)) if all_trans else None,
                  "clips": len(per_clip), "clips_flagged": flagged, "follows_path": not flagged and bool(per_clip)},
        "paths": {"requested": camera_centers(w2c[:ranges[-1][1]]).tolist(),
                  "requested_forward": np.transpose(w2c[:ranges[-1][1], :3, :3], (0, 2, 1))[:, :, 2].tolist(),
                  "recovered_frames": frames_done,
                  "recovered": camera_centers(np.stack([recovered[f] for f in frames_done])).tolist(),
                  "recovered_forward": np.stack([recovered[f][:3, :3].T[:, 2] for f in frames_done]).tolist()},
    }


def write_camera_plot(path: str | Path, result: dict) -> Path:
    """The requested and the recovered path seen from above (``camera_paths.png``)."""
    from ..camera.preview import plot_paths_topdown

    paths = result["paths"]
    video = result["video"]
    rotation = video["rotation_error_deg"]
    title = "requested vs recovered camera path"
    if rotation is not None:
        title += f" (rotation error {rotation:.1f} deg)"
    requested = ("requested", np.asarray(paths["requested"]), np.asarray(paths["requested_forward"]))
    recovered = ("recovered from the video", np.asarray(paths["recovered"]), np.asarray(paths["recovered_forward"]))
    return plot_paths_topdown(path, [requested, recovered], title=title)


# --------------------------------------------------------------------------------------------------
# The report section of python -m longvie.eval (longvie.eval.sections)
# --------------------------------------------------------------------------------------------------

KEY = "camera"
PLOT_NAME = "camera_paths.png"


def compute(context) -> dict | None:
    """The ``camera`` entry of metrics.json when the video's condition folder has camera.json (None: the
    section does not apply). Writes ``camera_paths.png`` into the report folder."""
    video = context.video
    camera_json = find_camera_json(video.depth_videos, video.cond_path, video.run_dir)
    if camera_json is None:
        return None
    camera = json.loads(camera_json.read_text(encoding="utf-8"))
    camera["_path"] = str(camera_json)
    tracker = getattr(context.backends, "tracker", None)
    result = camera_adherence(video.frames, camera, tracker if callable(tracker) else None)
    if context.out_dir is not None:  # the report folder, claimed and marked as write_report does
        from ..media.output_dir import claim_output_dir, mark_output_dir
        from .report import REPORT_KIND

        out_dir = mark_output_dir(claim_output_dir(context.out_dir, "evaluation report", kind=REPORT_KIND), REPORT_KIND)
        result["plot"] = write_camera_plot(out_dir / PLOT_NAME, result).name
    return result


def _degrees(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown(value: dict) -> str:
    """The section of metrics.md: per clip and whole-video errors, the verdict and the plot."""
    lines = ["## Camera adherence", "",
             f"Requested path: `{value.get('camera_json')}`; tracker {value['tracker']}. {value['definition']}. "
             f"A clip is flagged above {ROTATION_BOUND_DEG:g} degrees of rotation error or "
             f"{TRANSLATION_BOUND_DEG:g} degrees of translation-direction error.", "",
             "| clip | frames | rotation error (deg) | sum (deg, CameraCtrl) | translation direction (deg) | pairs "
             "| follows |", "|---|---|---|---|---|---|---|"]
    for index, clip in enumerate(value["per_clip"]):
        cells = [str(index), f"{clip['frames'][0]}-{clip['frames'][1] - 1}", _degrees(clip["rotation_error_deg"]),
                 _degrees(clip["rotation_error_sum_deg"]), _degrees(clip["translation_direction_error_deg"]),
                 f"{clip['pairs'] - clip['pairs_failed']}/{clip['pairs']}", "yes" if clip["follows_path"] else "NO"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"**Whole video** ({summary(value)}).", ""]
    if value.get("plot"):
        lines += [f"![requested and recovered camera path]({value['plot']})", ""]
    return "\n".join(lines)


def summary(value: dict) -> str:
    """One console line."""
    video = value["video"]
    rot, trans = video["rotation_error_deg"], video["translation_direction_error_deg"]
    parts = [f"rotation error {rot:.2f} deg" if rot is not None else "rotation error n/a",
             f"translation-direction error {trans:.1f} deg" if trans is not None
             else "translation direction not scored"]
    verdict = ("follows the path" if video["follows_path"]
               else f"clips {video['clips_flagged']} do not follow the path")
    return f"camera adherence: {', '.join(parts)} over {video['clips']} clip(s); {verdict}"
