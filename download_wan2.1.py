#!/usr/bin/env python
"""Download the Wan2.1-I2V-14B-480P base model and the LongVie 2 weights into ./models.

    python download_wan2.1.py                      # diffusers layout (default) + LongVie 2 -> ./models
    python download_wan2.1.py --layout original    # the original Wan2.1 layout (what upstream LongVie uses)
    python download_wan2.1.py --dry-run            # print the plan; download nothing
    python download_wan2.1.py --check-only         # check what is on disk; print the config lines
    python download_wan2.1.py --source modelscope  # base model from ModelScope (pip install modelscope)
    python download_wan2.1.py --fast-lora          # also the fast mode's 4-step distill LoRA -> ./models/loras

A thin entry point: the logic lives in :mod:`longvie.weights.download`.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from longvie.weights.download import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
