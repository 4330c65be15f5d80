"""Evaluation of generated long videos: the paper's metrics, long-video drift diagnostics, reports and
the benchmark runner (``python -m longvie.eval``, ``python -m longvie.eval.bench``).

Modules: ``quality`` (PSNR, SSIM, LPIPS; ``compare_videos``, the fast-mode quality gate),
``vbench_metrics`` (VBench's A.Q., I.Q., S.C., B.C., O.C. stand-in, D.D. on transformers/torchvision),
``diagnostics`` (per-clip drift, boundary jumps, colour shift, control adherence), ``availability``
(offline-safe weights: "not computed: needs <model id>"), ``backends`` (loading them all), ``inputs``
(run directory or video), ``evaluate`` (one video -> result dict), ``report`` (metrics.json, table,
plots), ``cli``/``__main__``, ``bench`` (benchmark runner), ``make_bench`` (benchmark folder builder).

May import: everything below ``longvideo`` and ``longvideo`` itself.
"""
