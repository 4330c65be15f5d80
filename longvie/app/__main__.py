"""``python -m longvie.app``: the LongVie 2 page in a browser.

    python -m longvie.app --preset tiny            # CPU, tiny random weights: try the page anywhere
    python -m longvie.app                          # the released model (configs/longvie2_i2v_14b.yaml), GPU
    python -m longvie.app --host 127.0.0.1 --port 7860 --outputs outputs/app

The server listens on 127.0.0.1 only (reach a remote GPU box with ``ssh -L 7860:127.0.0.1:7860
host``); ``--host 0.0.0.0`` opens it to the network and ``--share`` makes a public gradio.live link,
both off by default; opened that way it asks for a login when given one (``--auth USER:PASSWORD``,
``--auth-file FILE``) and warns loudly when not. The page reads server files only inside
``--allowed-dir`` folders (the outputs folder always; ``examples`` by default). Each browser sees
its own runs; ``--shared-runs`` lists every run (read only for the others).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m longvie.app", description="LongVie 2 web app (Gradio).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", dest="config", default="longvie2_i2v_14b",
                        help="YAML config: a path or a name in configs/ (longvie2_i2v_14b, tiny)")
    parser.add_argument("--preset", dest="config", help="same as --config NAME")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--outputs", type=Path, default=Path("outputs/app"), help="folder of the run directories")
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available; cpu for tiny)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    parser.add_argument("--no-preload", action="store_true",
                        help="load the model when the first job needs it, not at start-up")
    parser.add_argument("--step-delay", type=float, default=0.0,
                        help="seconds to wait after each denoising step (demos and the browser test)")
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                        help="a login the page asks for (repeatable); recommended with --host 0.0.0.0 or --share")
    parser.add_argument("--auth-file", type=Path, metavar="FILE",
                        help="logins from a file, one USER:PASSWORD a line (# comments allowed)")
    parser.add_argument("--allowed-dir", action="append", default=None, metavar="DIR", dest="allowed_dirs",
                        help="a folder whose files the page's server-path fields may read (repeatable; the "
                             "outputs folder always; default: examples)")
    parser.add_argument("--shared-runs", action="store_true",
                        help="list every browser's runs on every page (read only for the others); by default "
                             "each browser sees only its own")
    parser.add_argument("--no-previews", action="store_true",
                        help="no live preview of the clip being denoised")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="[longvie.app] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from .access import AllowedDirs, exposure_warning, load_logins
    from .engine import Studio

    try:
        logins = load_logins(args.auth, args.auth_file)
        studio = Studio(args.config, args.outputs, device=args.device, step_delay=args.step_delay,
                        previews=not args.no_previews)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.auth_file:
        from .access import auth_file_is_private

        if not auth_file_is_private(args.auth_file):
            print(f"warning: --auth-file {args.auth_file} is readable by other users of this machine "
                  f"(chmod 600 {args.auth_file})", file=sys.stderr)
    warning = exposure_warning(args.host, args.share, bool(logins))
    if warning:
        print(warning, file=sys.stderr)
        logging.getLogger("longvie.app").warning("open to the network without a login")
    studio.outputs.mkdir(parents=True, exist_ok=True)
    allowed = AllowedDirs.create(studio.outputs, args.allowed_dirs)
    if not args.no_preload:
        studio.preload()
    from .ui import launch

    try:
        launch(studio, host=args.host, port=args.port, share=args.share, logins=logins, allowed=allowed,
               shared_runs=args.shared_runs)
    except OSError as err:  # e.g. the port is taken
        print(f"error: {err} — pick another --port", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
