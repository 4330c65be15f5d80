"""The web app (``python -m longvie.app``): a page over the long-video sampler and the control
extraction tools. It reuses the sampler's config resolution, weight checks and pipeline loader
(plain functions of ``longvie.longvideo.cli``) so that a run made here is the same as one made with
``python -m longvie.sample``, and the ``utils/`` extraction functions for driving videos.

``engine`` (jobs, no UI), ``inputs`` (page inputs -> condition folder), ``runs`` (run listing,
zip), ``extraction`` (driving video -> controls), ``camera`` (the Camera tab's jobs over
``longvie.camera``), ``ui`` and ``camera_ui`` (the Gradio page and its Camera tab), ``__main__`` (CLI).

May import: every other subpackage except ``benchmark``.
"""
