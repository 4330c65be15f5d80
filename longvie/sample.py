"""``python -m longvie.sample``: ultra-long video generation (the command line lives in
:mod:`longvie.longvideo.cli`; ``sample_longvideo.sh`` calls this)."""
import sys

from .longvideo.cli import main

if __name__ == "__main__":
    sys.exit(main())
