"""Command line of ``python -m longvie.eval`` (and the options ``python -m longvie.eval.bench`` shares).

Learned metrics load their weights through huggingface_hub / torchvision's cache. ``--local-files``
forbids downloads; offline (the hub does not answer a 3 s probe) the same happens automatically, and
whatever is not cached is reported as "not computed: needs <model id>" while SSIM, PSNR, colour drift
and the seam scores are always computed. ``--fast`` skips every learned model.

``--out`` is checked before anything else is done (:func:`longvie.media.output_dir.claim_output_dir`): a
new or empty folder, or an earlier report of this command (re-written); a file, or a folder holding
other files, is refused with one message and exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .vbench_metrics import EXTRA_METRICS, VBENCH_METRICS

__all__ = ["build_parser", "add_backend_arguments", "backend_options", "eval_settings", "main"]

logger = logging.getLogger("longvie.eval")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models (weights are downloaded once, then cached)")
    group.add_argument("--local-files", action="store_true",
                       help="never download: use local paths and the Hugging Face / torch.hub caches only")
    group.add_argument("--fast", action="store_true",
                       help="no learned model at all (SSIM, PSNR, colour drift, boundaries, track adherence)")
    group.add_argument("--metrics", default=",".join(VBENCH_METRICS),
                       help="comma-separated VBench metrics to compute (empty: none); overall_consistency also "
                            f"computes the CLIP stand-in, which {', '.join(EXTRA_METRICS)} asks for alone")
    group.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    group.add_argument("--alexnet-weights", help="torchvision AlexNet weights file for LPIPS (else torch.hub cache)")
    group.add_argument("--aesthetic-head", help="LAION sa_0_4_vit_l_14_linear.pth (else torch.hub cache)")
    group.add_argument("--raft-weights", help="torchvision raft_large C_T_V1 weights file (else torch.hub cache)")
    group.add_argument("--musiq-weights",
                       help="pyiqa MUSIQ-SPAQ weights musiq_spaq_ckpt-358bb6af.pth for I.Q. (else pyiqa's cache)")
    group.add_argument("--no-depth", action="store_true", help="skip depth adherence")
    group.add_argument("--depth-model", default=None,
                       help="Depth Anything V2 hub id or folder (default depth-anything/Depth-Anything-V2-Small-hf)")
    group.add_argument("--vda-checkpoint", help="Video Depth Anything checkpoint for depth adherence instead")
    group.add_argument("--no-tracks", action="store_true", help="skip point re-tracking (Lucas-Kanade)")
    group.add_argument("--device", help="torch device for the models (default: cuda when available)")
    group.add_argument("--clip-frames", type=int, default=81,
                       help="frames per clip when the generated video does not record it (a run directory does)")
    group.add_argument("--fps", type=float, default=None,
                       help="frame rate for dynamic degree when the file's own is wrong (default: the rate the "
                            "video file or run records, else 16)")
    group.add_argument("--resize", choices=("crop", "stretch"), default="crop",
                       help="how a reference/control of another size is brought to the generated size")


def backend_options(args):
    from ..controls.depth_estimators import DEFAULT_DEPTH_ANYTHING_V2
    from .backends import BackendOptions

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    unknown = [m for m in metrics if m not in VBENCH_METRICS + EXTRA_METRICS]
    if unknown:
        raise ValueError(f"--metrics: unknown {', '.join(unknown)}; choose from "
                         f"{', '.join(VBENCH_METRICS + EXTRA_METRICS)}")
    fast = args.fast
    return BackendOptions(local_files_only=args.local_files, device=args.device, metrics=() if fast else metrics,
                          lpips=not (fast or args.no_lpips), alexnet_weights=args.alexnet_weights,
                          aesthetic_head=args.aesthetic_head, raft_weights=args.raft_weights,
                          musiq_weights=args.musiq_weights,
                          depth=not (fast or args.no_depth), depth_model=args.depth_model or DEFAULT_DEPTH_ANYTHING_V2,
                          vda_checkpoint=args.vda_checkpoint, tracks=not args.no_tracks)


def eval_settings(args):
    from .evaluate import EvalSettings

    if args.clip_frames < 2:
        raise ValueError(f"--clip-frames {args.clip_frames}: a clip needs at least 2 frames")
    if args.fps is not None and not args.fps > 0:
        raise ValueError(f"--fps {args.fps}: give a positive frame rate, e.g. 16")
    return EvalSettings(clip_frames=args.clip_frames, resize=args.resize, fps=args.fps)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m longvie.eval",
                                     description="Score a generated long video: the paper's metrics per clip and "
                                                 "for the whole video, and long-video drift diagnostics.")
    parser.add_argument("--generated", required=True, type=Path,
                        help="a run directory of python -m longvie.sample, or a video file")
    parser.add_argument("--reference", type=Path, help="ground-truth video (for SSIM, PSNR, LPIPS)")
    parser.add_argument("--prompts", type=Path,
                        help="cond.json with the prompts and controls (default: a run directory's own)")
    parser.add_argument("--out", required=True, type=Path,
                        help="report folder: new, empty, or an earlier report of this command (re-written)")
    parser.add_argument("--name", default=None, help="row name in the table (default: the generated path's name)")
    add_backend_arguments(parser)
    return parser


def setup_logging() -> None:
    """Console log lines of the package (the sampler's handler, so both CLIs print through one)."""
    from ..longvideo.cli import _setup_console_logging

    _setup_console_logging()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    from ..media.output_dir import OutputDirError, claim_output_dir
    from .backends import load_backends
    from .evaluate import evaluate_files
    from .report import REPORT_KIND, summary_line

    for path, what in ((args.generated, "--generated"), (args.reference, "--reference"), (args.prompts, "--prompts")):
        if path is not None and not path.exists():
            print(f"error: {what} {path} not found — check the path", file=sys.stderr)
            return 2
    try:
        claim_output_dir(args.out, "evaluation report", kind=REPORT_KIND)
        options = backend_options(args)
        settings = eval_settings(args)
        backends = load_backends(options)
        name = args.name or args.generated.name
        result = evaluate_files(args.generated, args.out, args.reference, args.prompts, backends, settings, name)
    except (ValueError, OutputDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_line(name, result))
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    print(f"report: {args.out / 'metrics.md'}  metrics: {args.out / 'metrics.json'}")
    return 0
