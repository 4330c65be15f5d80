"""Evaluation of generated long videos: the paper's metrics, long-video drift diagnostics, reports and
the benchmark runner (``python -m longvie.eval``, ``python -m longvie.eval.bench``).

Modules: ``quality`` (PSNR, SSIM, LPIPS; ``compare_videos``, the fast-mode quality gate),
``vbench_preprocess`` (VBench's resizes, crops, frame sampling and dynamic-degree rule, written out),
``vbench_metrics`` (VBench's A.Q., I.Q., S.C., B.C., D.D. for the whole video and per clip; O.C.
needs ViCLIP: not computed, with a CLIP stand-in in its own column), ``diagnostics`` (seams and colour
jumps at clip boundaries, colour drift, per-clip drift, control adherence), ``availability``
(offline-safe weights: "not computed: needs <model id>"), ``backends`` (loading them all), ``inputs``
(run directory or video, its frame rate), ``evaluate`` (one video -> result dict), ``sections`` (extra
report sections, e.g. camera adherence), ``report`` (metrics.json, metrics.md, plots), ``cli`` /
``__main__``, ``bench`` (benchmark runner), ``make_bench`` (benchmark folder builder).

May import: everything below ``longvideo`` and ``longvideo`` itself.
"""
