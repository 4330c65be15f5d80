"""``python -m longvie.eval``: score a generated long video against a reference.

    python -m longvie.eval --generated outputs/tiny_run --reference reference.mp4 --out eval/tiny
    python -m longvie.eval --generated upstream.mp4 --reference gt.mp4 --prompts cond.json --out eval/up

Writes OUT/metrics.json, OUT/metrics.md (table in the paper's column order, the paper's LongVie 2 row
beside ours) and OUT/*.png, and prints one summary line. See :mod:`longvie.eval.cli`.
"""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
