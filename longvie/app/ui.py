"""The page (Gradio Blocks) over :class:`longvie.app.engine.Studio`.

Layout: inputs on the left (control videos / condition folder / driving video, the per-clip prompt
table, settings, Generate and Cancel), results on the right (message, progress, one row per clip
with depth | tracks | generated, the stitched video, downloads), past runs below (resume, redo a
clip, zip the run folder). Handlers never raise: every problem becomes the message above the results.
"""
from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from ..controls.depth_estimators import DEFAULT_DEPTH_ANYTHING_V2
from ..controls.point_tracking import BACKENDS as TRACK_BACKENDS
from ..longvideo.validation import load_conditions
from .engine import OFFLOAD_MODES, ClipView, GenerationRequest, Studio, describe_error
from .extraction import STAGES, ExtractionOptions
from .inputs import AppInputError, check_suffix, parse_prompt_table, prompt_rows, read_condition_folder
from .runs import list_runs

__all__ = ["build_app", "CSS"]

logger = logging.getLogger("longvie.app")

CSS = """
#message.lv-error, #message .lv-error { color: #b00020; }
.lv-clip { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px; margin-bottom: 8px; }
.lv-prompt { font-size: 0.9em; margin-bottom: 4px; }
.lv-row { display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 6px; }
.lv-row figure { margin: 0; text-align: center; }
.lv-row video { width: 100%; image-rendering: pixelated; background: #000; border-radius: 4px; }
.lv-row figcaption { font-size: 0.8em; opacity: 0.8; }
.lv-pending { display: flex; align-items: center; justify-content: center; aspect-ratio: 16 / 9;
              background: var(--background-fill-secondary); border-radius: 4px; font-size: 0.85em; }
.lv-stages progress { width: 100%; }
"""


# --------------------------------------------------------------------------------------------------
# Rendering helpers (pure functions: unit-tested without a browser)
# --------------------------------------------------------------------------------------------------


def file_url(path: Path, version: str = "") -> str:
    """The URL under which Gradio serves an allowed file (``?v=`` changes when the file is rewritten)."""
    url = "/gradio_api/file=" + quote(str(Path(path).resolve()))
    return url + (f"?v={quote(version)}" if version else "")


def _video(path: Path, version: str = "", css_class: str = "") -> str:
    return (f'<video class="{css_class}" src="{file_url(path, version)}" muted loop autoplay playsinline '
            'controls preload="auto"></video>')


def render_clips(views: list[ClipView], active: int | None = None) -> str:
    """One row per clip: depth | tracks | generated (or "generating" for clip ``active``, else "waiting")."""
    if not views:
        return '<div class="lv-clips"><p>No clips yet.</p></div>'
    rows = []
    for view in views:
        if view.video is not None:
            generated = _video(view.video, view.version, "lv-generated")
        elif active == view.index:
            generated = '<div class="lv-pending">generating ...</div>'
        else:
            generated = '<div class="lv-pending">waiting</div>'
        rows.append(
            f'<div class="lv-clip" id="clip-{view.index}">'
            f'<div class="lv-prompt"><b>Clip {view.index}</b>: {html.escape(view.text)}</div>'
            f'<div class="lv-row">'
            f'<figure id="clip-{view.index}-depth">{_video(view.depth)}<figcaption>depth</figcaption></figure>'
            f'<figure id="clip-{view.index}-tracks">{_video(view.track)}<figcaption>tracks</figcaption></figure>'
            f'<figure id="clip-{view.index}-generated">{generated}<figcaption>generated</figcaption></figure>'
            f'</div></div>')
    return '<div class="lv-clips">' + "".join(rows) + "</div>"


def render_stages(progress: dict[str, tuple[int, int]]) -> str:
    """One progress bar per extraction stage."""
    bars = []
    for stage in STAGES:
        done, total = progress.get(stage, (0, 0))
        value = f'value="{done}" max="{max(total, 1)}"' if total else 'value="0" max="1"'
        count = f"{done}/{total}" if total else "—"
        bars.append(f'<div><label>{html.escape(stage)} <span>{count}</span></label><progress {value}></progress></div>')
    return '<div class="lv-stages" id="stages">' + "".join(bars) + "</div>"


def error_message(text: str, title: str = "Cannot do that:") -> str:
    return f'<div class="lv-error"><b>{title}</b>\n\n{text}</div>'


def ok_message(text: str) -> str:
    return f'<div class="lv-ok">{html.escape(text)}</div>'


def _paths(files) -> list[str]:
    """File component values (paths or objects with .name) -> sorted paths (clips in name order)."""
    if not files:
        return []
    files = files if isinstance(files, list) else [files]
    return sorted((getattr(f, "name", None) or str(f)) for f in files)


def _path(file) -> str | None:
    paths = _paths(file)
    return paths[0] if paths else None


def resize_table(table, count: int) -> list[list]:
    """The prompt table with ``count`` rows, keeping the prompts already typed."""
    if hasattr(table, "values") and hasattr(table, "columns"):
        table = table.values.tolist()
    texts = [str(row[1]) if len(row) > 1 and row[1] is not None else "" for row in (table or [])]
    texts = [t if t != "nan" else "" for t in texts]
    texts = (texts + [""] * count)[:count] if count else texts
    return prompt_rows(texts)


def run_choices(studio: Studio) -> list[tuple[str, str]]:
    return [(summary.label, str(summary.path)) for summary in list_runs(studio.outputs)]


# --------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------


def build_app(studio: Studio) -> gr.Blocks:
    """The Gradio page over ``studio``. Launch with ``.queue().launch(...)`` (see ``__main__``)."""
    s = studio.sampling
    weight_problems = studio.weight_problems()

    with gr.Blocks(title="LongVie 2") as demo:
        source = gr.State({"folder": None, "image": None, "depth": [], "track": []})
        current_run = gr.State(None)

        gr.Markdown(f"# LongVie 2 — long controllable video\nConfig **{studio.config['preset']}** · runs in "
                    f"`{studio.outputs}` · one job at a time (queued).")
        if weight_problems:
            gr.Markdown(error_message("\n".join(f"- {p}" for p in weight_problems)
                                      + "\n\nTo try the page without weights: `python -m longvie.app --preset tiny`.",
                                      title="The model weights are missing; generation will not start:"),
                        elem_id="weights-warning")
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tabs():
                    with gr.Tab("Control videos", id="tab-videos"):
                        first_frame = gr.File(label="First frame (PNG/JPEG)", file_count="single",
                                              elem_id="first-frame")
                        depth_files = gr.File(label="Depth videos, one per clip (in name order)",
                                              file_count="multiple", elem_id="depth-files")
                        track_files = gr.File(label="Track videos, one per clip (in name order)",
                                              file_count="multiple", elem_id="track-files")
                        cond_file = gr.File(label="Prompts from a cond.json (optional)", elem_id="cond-file")
                    with gr.Tab("Condition folder", id="tab-folder"):
                        folder = gr.Textbox(label="Condition folder on the server (with cond.json, e.g. from "
                                                  "utils/prepare_controls.py)", elem_id="folder")
                        load_folder = gr.Button("Load folder", elem_id="load-folder")
                    with gr.Tab("Driving video", id="tab-driving"):
                        driving = gr.File(label="Driving video (at least 81 frames; 16 fps)", elem_id="driving")
                        with gr.Row():
                            depth_npy = gr.File(label="Disparity .npy (optional; replaces the depth model)",
                                                elem_id="depth-npy")
                            with gr.Column():
                                vda_checkpoint = gr.Textbox(label="Video Depth Anything checkpoint (server path)")
                                depth_model = gr.Textbox(value=DEFAULT_DEPTH_ANYTHING_V2,
                                                         label="else Depth Anything V2 (hub id or folder)")
                                local_files = gr.Checkbox(label="Local files only (no download)")
                        with gr.Row():
                            tracker = gr.Radio(list(TRACK_BACKENDS), value="lk", label="Tracker")
                            grid = gr.Number(value=70, precision=0, label="Track grid (points per side)")
                            frame_step = gr.Number(value=1, precision=0, label="Frame step")
                        extract = gr.Button("Extract controls", elem_id="extract")
                        stages = gr.HTML(render_stages({}))
                controls_info = gr.Markdown("No controls yet.", elem_id="controls-info")
                prompts = gr.Dataframe(headers=["clip", "prompt"], datatype=["number", "str"], type="array",
                                       value=[], interactive=True, label="Prompts, one row per clip",
                                       elem_id="prompts", wrap=True)
                with gr.Accordion("Settings", open=True):
                    with gr.Row():
                        seed = gr.Number(value=s["seed"], precision=0, label="Seed", elem_id="seed", min_width=90)
                        steps = gr.Number(value=s["steps"], precision=0, label="Steps", elem_id="steps", min_width=90)
                        cfg = gr.Number(value=s["cfg"], label="CFG", elem_id="cfg", min_width=90)
                    with gr.Row():
                        height = gr.Number(value=s["height"], precision=0, label="Height", elem_id="height", min_width=90)
                        width = gr.Number(value=s["width"], precision=0, label="Width", elem_id="width", min_width=90)
                        num_frames = gr.Number(value=s["num_frames"], precision=0, label="Frames per clip (4k+1)",
                                               elem_id="num-frames", min_width=90)
                    offload = gr.Radio(list(OFFLOAD_MODES), value=studio.config.get("offload") or "none",
                                       label="Memory mode (none: all on the GPU; model: one model at a time, 80 GB; "
                                             "group: streamed, 24-48 GB)", elem_id="offload")
                    run_name = gr.Textbox(label="Run name (optional)", elem_id="run-name")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=1):
                message = gr.Markdown("", elem_id="message")
                status = gr.Markdown("Idle.", elem_id="status")
                clips = gr.HTML(render_clips([]), elem_id="clips")
                final_video = gr.Video(label="Stitched video", elem_id="final-video", interactive=False, height=320)
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
        with gr.Accordion("Past runs", open=True):
            with gr.Row():
                runs = gr.Dropdown(choices=run_choices(studio), label="Run", elem_id="runs", scale=4)
                refresh = gr.Button("Refresh", elem_id="refresh", scale=1)
            with gr.Row():
                show = gr.Button("Show", elem_id="show")
                resume = gr.Button("Resume", elem_id="resume")
                zip_button = gr.Button("Zip run folder", elem_id="zip")
            with gr.Row():
                redo_clip = gr.Number(value=0, precision=0, label="Redo clip K (and every clip after it)",
                                      elem_id="redo-clip")
                redo_seed = gr.Textbox(label="New seed (optional)", elem_id="redo-seed")
                redo_prompt = gr.Textbox(label="New prompt (optional)", elem_id="redo-prompt")
                redo = gr.Button("Redo", elem_id="redo")

        # ---------------------------------------------------------------- handlers
        def describe_controls(src: dict, image, depth, track) -> str:
            uploaded = bool(_paths(depth) or _paths(track))
            image = _path(image) or src.get("image")
            depth, track = _paths(depth) or src.get("depth") or [], _paths(track) or src.get("track") or []
            where = f"folder `{src['folder']}`" if src.get("folder") and not uploaded else "uploads"
            return (f"Controls: {min(len(depth), len(track))} clip(s) from {where}; first frame: "
                    f"{Path(image).name if image else 'missing'}.")

        def on_uploads(src, image, depth, track, table):
            try:
                count = min(len(_paths(depth) or src.get("depth") or []), len(_paths(track) or src.get("track") or []))
                return describe_controls(src, image, depth, track), resize_table(table, count), ""
            except Exception as err:  # noqa: BLE001
                return gr.update(), gr.update(), error_message(describe_error(err))

        for component in (first_frame, depth_files, track_files):
            component.change(on_uploads, [source, first_frame, depth_files, track_files, prompts],
                             [controls_info, prompts, message], queue=False)

        def on_cond_file(file, table):
            path = _path(file)
            if path is None:
                return gr.update(), ""
            try:
                problems = check_suffix(path, (".json",), "prompt list")
                if problems:
                    raise AppInputError(problems)
                clips_, problems = load_conditions(path)
                if problems:
                    raise AppInputError(problems)
                return prompt_rows([c.text for c in clips_]), ""
            except Exception as err:  # noqa: BLE001
                return gr.update(), error_message(describe_error(err))

        cond_file.change(on_cond_file, [cond_file, prompts], [prompts, message], queue=False)

        def from_folder(path: str | Path, src: dict):
            image, depth, track, texts = read_condition_folder(path)
            src = {"folder": str(path), "image": str(image) if image else None, "depth": [str(p) for p in depth],
                   "track": [str(p) for p in track]}
            return src, prompt_rows(texts)

        def on_load_folder(path, src):
            """The folder's controls and prompts replace the uploaded ones (the upload boxes are cleared;
            a first frame uploaded afterwards replaces the folder's)."""
            try:
                src, rows = from_folder(path, src)
                return src, rows, describe_controls(src, None, None, None), "", None, None, None
            except Exception as err:  # noqa: BLE001
                return (src, gr.update(), gr.update(), error_message(describe_error(err)), gr.update(), gr.update(),
                        gr.update())

        load_folder.click(on_load_folder, [folder, source],
                          [source, prompts, controls_info, message, first_frame, depth_files, track_files],
                          concurrency_limit=None)

        def on_extract(video, npy, vda, model, local, track_backend, grid_size, step, src):
            stage_progress: dict[str, tuple[int, int]] = {}
            try:
                options = ExtractionOptions(frame_step=int(step or 1), depth_npy=_path(npy),
                                            vda_checkpoint=(vda or "").strip() or None,
                                            depth_model=(model or "").strip() or DEFAULT_DEPTH_ANYTHING_V2,
                                            local_files_only=bool(local), track_backend=track_backend,
                                            grid=int(grid_size or 70))
                for event in studio.extract(_path(video), options):
                    if event.kind == "step":
                        stage_progress[event.stage] = (event.step, event.steps)
                        yield {stages: render_stages(stage_progress), status: event.message}
                    elif event.kind == "status":
                        yield {status: html.escape(event.message)}
                    elif event.kind == "done":
                        src, rows = from_folder(event.folder, src)
                        yield {source: src, prompts: rows, controls_info: describe_controls(src, None, None, None),
                               message: ok_message(event.message), status: "Controls ready.", folder: str(event.folder),
                               first_frame: None, depth_files: None, track_files: None}
                    elif event.kind == "cancelled":
                        yield {message: ok_message("Extraction cancelled."), status: "Idle."}
                    else:
                        yield {message: error_message(event.message), status: "Idle."}
            except Exception as err:  # noqa: BLE001
                yield {message: error_message(describe_error(err)), status: "Idle."}

        extract.click(on_extract, [driving, depth_npy, vda_checkpoint, depth_model, local_files, tracker, grid,
                                   frame_step, source],
                      [stages, status, source, prompts, controls_info, message, folder, first_frame, depth_files,
                       track_files],
                      concurrency_limit=1, concurrency_id="gpu")

        def follow(events, progress):
            """Page updates for a generation job's events."""
            run_dir = None
            for event in events:
                run_dir = event.run_dir or run_dir
                update: dict = {}
                if event.kind == "status":
                    update[status] = html.escape(event.message)
                    if run_dir is not None:
                        update[clips] = render_clips(studio.clip_views(run_dir))
                        update[current_run] = str(run_dir)
                elif event.kind == "step":
                    done = event.clip * event.steps + event.step
                    text = f"Clip {event.clip + 1}/{event.num_clips} · step {event.step}/{event.steps}"
                    progress(done / max(event.num_clips * event.steps, 1), desc=text)
                    update[status] = text
                    if event.step == 1:  # a clip starts: mark it in the clip rows
                        update[clips] = render_clips(studio.clip_views(run_dir), active=event.clip)
                elif event.kind == "clip":
                    update[status] = html.escape(event.message)
                    update[clips] = render_clips(studio.clip_views(run_dir))
                elif event.kind == "done":
                    update.update({status: html.escape(event.message), final_video: str(event.video),
                                   downloads: [str(event.video)], clips: render_clips(studio.clip_views(run_dir)),
                                   runs: gr.update(choices=run_choices(studio), value=str(run_dir)),
                                   message: ok_message(event.message)})
                elif event.kind == "cancelled":
                    update.update({status: "Cancelled.", message: ok_message(event.message),
                                   runs: gr.update(choices=run_choices(studio), value=str(run_dir) if run_dir else None)})
                else:
                    update.update({status: "Idle.", message: error_message(event.message)})
                    if run_dir is not None:
                        update[runs] = gr.update(choices=run_choices(studio), value=str(run_dir))
                yield update

        job_outputs = [message, status, clips, final_video, downloads, runs, current_run]

        def on_generate(src, image, depth, track, table, seed_, steps_, cfg_, height_, width_, frames_, offload_,
                        name, progress=gr.Progress()):
            yield {message: "", status: "Checking the inputs ...", final_video: None, downloads: None}
            try:
                depth = _paths(depth) or src.get("depth") or []
                track = _paths(track) or src.get("track") or []
                texts = parse_prompt_table(table, min(len(depth), len(track)) or None)
                request = GenerationRequest(image=_path(image) or src.get("image"), depth=depth, track=track,
                                            texts=texts, seed=seed_, steps=steps_, cfg=cfg_, height=height_,
                                            width=width_, num_frames=frames_, offload=offload_, name=name)
                yield from follow(studio.new_run(request), progress)
            except Exception as err:  # noqa: BLE001
                if not isinstance(err, AppInputError):
                    logger.exception("generate")
                yield {message: error_message(describe_error(err)), status: "Idle."}

        generate.click(on_generate, [source, first_frame, depth_files, track_files, prompts, seed, steps, cfg, height,
                                     width, num_frames, offload, run_name],
                       job_outputs, concurrency_limit=1, concurrency_id="gpu")

        def on_resume(run_dir, offload_, progress=gr.Progress()):
            if not run_dir:
                yield {message: error_message("Pick a run in Past runs first.")}
                return
            yield {message: "", status: "Resuming ...", final_video: None, downloads: None}
            try:
                yield from follow(studio.resume(run_dir, offload_), progress)
            except Exception as err:  # noqa: BLE001
                yield {message: error_message(describe_error(err)), status: "Idle."}

        resume.click(on_resume, [runs, offload], job_outputs, concurrency_limit=1, concurrency_id="gpu")

        def on_redo(run_dir, clip, seed_, text, offload_, progress=gr.Progress()):
            if not run_dir:
                yield {message: error_message("Pick a run in Past runs first.")}
                return
            yield {message: "", status: f"Regenerating from clip {clip} ...", final_video: None, downloads: None}
            try:
                yield from follow(studio.redo(run_dir, clip, seed_, text, offload_), progress)
            except Exception as err:  # noqa: BLE001
                yield {message: error_message(describe_error(err)), status: "Idle."}

        redo.click(on_redo, [runs, redo_clip, redo_seed, redo_prompt, offload], job_outputs,
                   concurrency_limit=1, concurrency_id="gpu")

        def on_cancel():
            return ok_message(studio.cancel())

        cancel.click(on_cancel, None, message, queue=False)

        def on_refresh():
            return gr.update(choices=run_choices(studio))

        refresh.click(on_refresh, None, runs, queue=False)

        def on_show(run_dir):
            if not run_dir:
                return {message: error_message("Pick a run in Past runs first.")}
            views = studio.clip_views(run_dir)
            video = Path(run_dir) / "video.mp4"
            return {clips: render_clips(views), final_video: str(video) if video.is_file() else None,
                    downloads: [str(video)] if video.is_file() else None, current_run: run_dir, message: ""}

        show.click(on_show, runs, [clips, final_video, downloads, current_run, message], concurrency_limit=None)
        runs.change(on_show, runs, [clips, final_video, downloads, current_run, message], queue=False)

        def on_zip(run_dir):
            if not run_dir:
                return {message: error_message("Pick a run in Past runs first.")}
            try:
                archive = studio.zip(run_dir)
            except Exception as err:  # noqa: BLE001
                return {message: error_message(describe_error(err))}
            video = Path(run_dir) / "video.mp4"
            files = ([str(video)] if video.is_file() else []) + [str(archive)]
            return {downloads: files, message: ok_message(f"Zipped {Path(run_dir).name} ({archive.stat().st_size // 1024} KiB).")}

        zip_button.click(on_zip, runs, [downloads, message], concurrency_limit=None)

        demo.load(lambda: gr.update(choices=run_choices(studio)), None, runs, queue=False)
    return demo


def allowed_paths(studio: Studio) -> list[str]:
    """Folders the page may serve files from: the run folders (clips, inputs, zips)."""
    studio.outputs.mkdir(parents=True, exist_ok=True)
    return [str(studio.outputs.resolve())]


def launch(studio: Studio, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app(studio)
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.launch(server_name=host, server_port=port, share=share, allowed_paths=allowed_paths(studio),
                show_error=False, inbrowser=False, css=CSS)


