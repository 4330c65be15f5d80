"""The page (Gradio Blocks) over :class:`longvie.app.engine.Studio` and :class:`longvie.app.jobs.JobManager`.

Layout: inputs on the left (control videos / condition folder / driving video / camera, the pairing of
controls with clips, the per-clip prompt table, LoRAs, settings, Generate, Stop after this clip,
Cancel), results on the right (message, status and progress, the live preview, one row per clip
with depth | tracks | generated, the stitched video, downloads), past runs below (show, resume,
redo a clip, zip the run folder).

Sessions: each browser keeps a random id in its local storage (``gr.BrowserState``); jobs and run
folders belong to it (:mod:`longvie.app.access`). A job runs in the job manager's worker, not in a
browser request: the page follows it (an async generator polling the manager), and a page opened
with ``?run=NAME`` follows that run again. Clip numbers start at 0 everywhere.

Handlers never raise: problems become messages in the page, next to the field they concern, in the
page's words.
"""
from __future__ import annotations

import collections
import html
import logging
import os
import re
import secrets
import threading
import uuid
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from ..controls.depth_estimators import DEFAULT_DEPTH_ANYTHING_V2
from ..controls.point_tracking import BACKENDS as TRACK_BACKENDS
from ..longvideo.run_state import RunDir
from ..longvideo.validation import load_conditions
from .access import AllowedDirs, NotAllowedError, new_session_id, owner_key, read_owner
from .camera import CameraJobs, is_explore_run
from .engine import OFFLOAD_MODES, ClipView, GenerationRequest, Studio, describe_error
from .extraction import STAGES, ExtractionOptions
from .inputs import (
    AppInputError,
    check_page_settings,
    check_suffix,
    lora_rows,
    lora_specs,
    parse_prompt_table,
    prompt_rows,
    read_condition_folder,
)
from .jobs import JobManager, NotYours
from .pairing import Pairing, pair_controls, render_pairing
from .runs import visible_runs

__all__ = ["build_app", "CSS", "launch", "render_clips", "render_stages", "resize_table", "camera_tab"]

logger = logging.getLogger("longvie.app")

CSS = """
.lv-error { color: #b00020; background: #fdecee; border-left: 4px solid #b00020; padding: 6px 10px;
            border-radius: 4px; margin: 4px 0; white-space: pre-line; }
.lv-ok { padding: 6px 10px; border-left: 4px solid #2e7d32; background: #edf7ee; border-radius: 4px; }
.lv-clip { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px; margin-bottom: 8px; }
.lv-prompt { font-size: 0.9em; margin-bottom: 4px; }
.lv-row { display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 6px; }
.lv-row figure { margin: 0; text-align: center; }
.lv-row video { width: 100%; image-rendering: pixelated; background: #000; border-radius: 4px; }
.lv-row figcaption { font-size: 0.8em; opacity: 0.8; }
.lv-pending { display: flex; align-items: center; justify-content: center; aspect-ratio: 16 / 9;
              background: var(--background-fill-secondary); border-radius: 4px; font-size: 0.85em; }
.lv-stages progress, #progress progress { width: 100%; }
.lv-pairing table { width: 100%; font-size: 0.85em; border-collapse: collapse; }
.lv-pairing td, .lv-pairing th { border-bottom: 1px solid var(--border-color-primary); padding: 2px 4px; }
.lv-bad, .lv-bad-row td:first-child { color: #b00020; }
.lv-flag { color: #8a5a00; }
.lv-how { font-size: 0.85em; opacity: 0.8; margin: 2px 0; }
.lv-hidden { display: none !important; }
#preview img { image-rendering: pixelated; }
"""

# After an action: put the followed run into the URL (a reload comes back to it) and bring the
# first field error into view.
SET_URL_JS = """(run) => { const url = new URL(window.location.href);
  if (run) { url.searchParams.set('run', run); } else { url.searchParams.delete('run'); }
  window.history.replaceState(null, '', url); return []; }"""
SHOW_ERROR_JS = """() => { const e = document.querySelector('.lv-field-error .lv-error');
  if (e) { e.scrollIntoView({block: 'center', behavior: 'smooth'}); } return []; }"""
FIELDS = ("inputs", "prompts", "lora", "settings", "runs")
FIELD_NAMES = {"inputs": "Inputs", "prompts": "Prompts", "lora": "LoRA", "settings": "Settings", "runs": "Past runs"}


# --------------------------------------------------------------------------------------------------
# Rendering helpers (pure functions: unit-tested without a browser)
# --------------------------------------------------------------------------------------------------


def file_url(path: Path, version: str = "") -> str:
    """The URL under which Gradio serves a file it may serve (``?v=`` changes when the file is rewritten)."""
    url = "/gradio_api/file=" + quote(str(Path(path).resolve()))
    return url + (f"?v={quote(version)}" if version else "")


def _video(url: str, css_class: str = "") -> str:
    return (f'<video class="{css_class}" src="{html.escape(url)}" muted loop autoplay playsinline '
            'controls preload="auto"></video>')


def render_clips(views: list[ClipView], active: int | None = None, url=file_url) -> str:
    """One row per clip: depth | tracks | generated (or "generating" for clip ``active``, else "waiting").

    ``url(path, version)`` gives the URL of a file (the page copies run files into gradio's cache
    first, so that nothing under the outputs folder is served by its path)."""
    if not views:
        return '<div class="lv-clips"><p>No clips yet.</p></div>'
    rows = []
    for view in views:
        if view.video is not None:
            generated = _video(url(view.video, view.version), "lv-generated")
        elif active == view.index:
            generated = '<div class="lv-pending">generating ...</div>'
        else:
            generated = '<div class="lv-pending">waiting</div>'
        rows.append(
            f'<div class="lv-clip" id="clip-{view.index}">'
            f'<div class="lv-prompt"><b>Clip {view.index}</b>: {html.escape(view.text)}</div>'
            f'<div class="lv-row">'
            f'<figure id="clip-{view.index}-depth">{_video(url(view.depth, ""))}'
            '<figcaption>depth</figcaption></figure>'
            f'<figure id="clip-{view.index}-tracks">{_video(url(view.track, ""))}'
            '<figcaption>tracks</figcaption></figure>'
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


def render_progress(done: int, total: int) -> str:
    if total <= 0:
        return ""
    return f'<progress value="{done}" max="{total}"></progress>'


def error_message(text: str, title: str = "Cannot do that:") -> str:
    lines = [line[2:] if line.startswith("- ") else line for line in str(text).splitlines() if line.strip()]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f'<div class="lv-error" role="alert"><b>{html.escape(title)}</b><ul>{items}</ul></div>'


def ok_message(text: str) -> str:
    return f'<div class="lv-ok">{html.escape(text)}</div>'


def _paths(files) -> list[str]:
    """File component values (paths or objects with .name) -> paths, in the order given (upload order)."""
    if not files:
        return []
    files = files if isinstance(files, list) else [files]
    return [str(getattr(f, "name", None) or f) for f in files]


def _path(file) -> str | None:
    paths = _paths(file)
    return paths[0] if paths else None


def replaced_uploads(value, previous: list[str]) -> list[str]:
    """The files of a new upload alone: gradio appends a new upload to the files already in a
    multiple-file box; the page replaces them instead."""
    paths = _paths(value)
    if previous and len(paths) > len(previous) and paths[:len(previous)] == list(previous):
        return paths[len(previous):]
    return paths


def resize_table(table, count: int, fallback=()) -> list[list]:
    """The prompt table with ``count`` rows, keeping the prompts already typed (new rows take
    ``fallback[i]``, e.g. the prompts of a loaded cond.json)."""
    if hasattr(table, "values") and hasattr(table, "columns"):
        table = table.values.tolist()
    texts = [str(row[1]) if len(row) > 1 and row[1] is not None else "" for row in (table or [])]
    texts = [t if t != "nan" else "" for t in texts]
    fallback = list(fallback or [])
    texts += [fallback[i] if i < len(fallback) else "" for i in range(len(texts), count)]
    texts = texts[:count] if count else texts
    return prompt_rows(texts)


_SERVER_FILE = re.compile(r"(?:[A-Za-z]:)?(?:/[^/\s:'\"()]+)+/([^/\s:'\"()]+\.[A-Za-z0-9]{2,12})\b")


def scrub_paths(text: str, folders: dict[str, str] | None = None) -> str:
    """A message for the page: absolute server paths of files become their names, and the given
    folders (``{server path: name shown}``) their names (an upload's temporary path is never shown)."""
    text = str(text)
    for path, shown in sorted((folders or {}).items(), key=lambda item: -len(item[0])):
        text = text.replace(path, shown)
    return _SERVER_FILE.sub(lambda match: match.group(1), text)


def classify(problems: list[str]) -> dict[str, list[str]]:
    """Field of each problem of the engine's checks (by what it names first)."""
    fields: dict[str, list[str]] = {name: [] for name in FIELDS}
    for problem in problems:
        lower = problem.lower()
        if lower.startswith("prompt table"):
            fields["prompts"].append(problem)
        elif lower.startswith("lora"):
            fields["lora"].append(problem)
        elif lower.startswith(("run name", "steps", "seed", "cfg", "height", "width", "frames per clip",
                               "memory mode")):
            fields["settings"].append(problem)
        else:
            fields["inputs"].append(problem)
    return fields


def camera_tab(studio: Studio, allowed: AllowedDirs):
    """The Camera tab (issue 22 point 6, issue 24 point 1; :mod:`longvie.app.camera_ui`): a photo and a
    camera path -> Preview path -> Generate. :func:`build_app` calls this inside its ``gr.Tabs`` after
    the "Driving video" tab and wires it once the page's shared parts exist."""
    from .camera_ui import camera_tab as draw

    return draw(allowed.describe(), int(studio.sampling["num_frames"]), int(studio.sampling.get("fps", 16)))


def persistent_secret(outputs: Path) -> str:
    """The key the browser's session id is stored under (kept across server restarts, so a
    browser keeps its runs)."""
    path = Path(outputs) / ".app_secret"
    try:
        value = path.read_text().strip()
        if len(value) >= 16:
            return value
    except OSError:
        pass
    value = secrets.token_hex(16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(value)
    return value


# --------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------


class Page:
    """Server-side helpers shared by the handlers of one app (not per browser)."""

    def __init__(self, studio: Studio, manager: JobManager, allowed: AllowedDirs, shared_runs: bool):
        self.studio, self.manager, self.allowed, self.shared = studio, manager, allowed, shared_runs
        self.followers: dict[str, str] = {}  # gradio session_hash (one page load) -> the job it follows
        # Uploaded control videos per page load, kept here (not in a gr.State): two uploads in quick
        # succession would otherwise each start from the other's stale value.
        self._uploads: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self._cached: dict[tuple, str] = {}
        self._lock = threading.Lock()
        self.serve_block = None  # the component whose cache serves run files (set by build_app)

    # ---------------------------------------------------------------- uploads of a page
    def uploads(self, request: gr.Request | None) -> dict:
        key = getattr(request, "session_hash", None) or ""
        with self._lock:
            return dict(self._uploads.get(key) or {"depth": [], "track": []})

    def set_uploads(self, request: gr.Request | None, **kinds) -> dict:
        key = getattr(request, "session_hash", None) or ""
        with self._lock:
            value = {"depth": [], "track": [], **(self._uploads.pop(key, None) or {}), **kinds}
            self._uploads[key] = value
            while len(self._uploads) > 2000:
                self._uploads.popitem(last=False)
            return dict(value)

    # ---------------------------------------------------------------- files
    def cached(self, path: str | Path) -> str:
        """A copy of a run file in gradio's cache (content-addressed, so not guessable), memoised."""
        path = Path(path)
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key not in self._cached or not Path(self._cached[key]).is_file():  # gradio's clean-up removed it
                self._cached[key] = self.serve_block.move_resource_to_block_cache(str(path))
                while len(self._cached) > 20000:
                    self._cached.pop(next(iter(self._cached)))
            return self._cached[key]

    def url(self, path: Path, version: str = "") -> str:
        return file_url(self.cached(path), version)

    def scrub(self, text: str) -> str:
        """``text`` without server paths (see :func:`scrub_paths`)."""
        outputs = Path(self.studio.outputs)
        return scrub_paths(text, {str(outputs.resolve()): outputs.name, str(outputs): outputs.name})

    def follow(self, page_key: str | None, token: str) -> None:
        if page_key:
            with self._lock:
                self.followers.pop(page_key, None)
                self.followers[page_key] = token
                while len(self.followers) > 5000:
                    self.followers.pop(next(iter(self.followers)))

    def still_following(self, page_key: str | None, token: str) -> bool:
        return page_key is None or self.followers.get(page_key) == token

    # ---------------------------------------------------------------- runs and owners
    def run_dir(self, name: str | None) -> Path | None:
        name = (name or "").strip()
        if not name or name != Path(name).name or name.startswith("."):
            return None
        return self.studio.outputs / name

    def can_view(self, folder_owner: str | None, viewer: str | None) -> bool:
        return self.shared or (folder_owner is not None and folder_owner == viewer)

    def run_choices(self, viewer: str | None) -> list[tuple[str, str]]:
        return [(s.label_for(viewer), s.path.name) for s in visible_runs(self.studio.outputs, viewer, self.shared)]

    def owner_of(self, name: str) -> str | None:
        job = self.manager.get(name)
        if job is not None:
            return job.owner
        run = self.run_dir(name)
        return read_owner(run) if run is not None else None

    def server_folder(self, value: str, owner: str | None, what: str) -> Path:
        """A server path typed in the page, inside the allowed folders and, under the outputs
        folder, inside a folder of this session (or any, with shared runs)."""
        path = self.allowed.resolve(value, what)
        outputs = Path(os.path.realpath(self.studio.outputs))
        if path == outputs or path.is_relative_to(outputs):
            parts = path.relative_to(outputs).parts
            top = outputs / parts[0] if parts else outputs
            if parts and parts[0] == ".controls" and len(parts) > 1:
                top = top / parts[1]
            hidden = bool(parts) and parts[0].startswith(".") and parts[0] != ".controls"  # e.g. .app_secret
            if not parts or hidden or not self.can_view(read_owner(top), owner):
                raise NotAllowedError(f"{what} {str(value).strip()}: not found")
        return path


def build_app(studio: Studio, manager: JobManager | None = None, allowed: AllowedDirs | None = None,
              shared_runs: bool = False) -> gr.Blocks:
    """The Gradio page over ``studio``. Launch with :func:`launch` (queue, CSS, logins)."""
    manager = manager or JobManager()
    allowed = allowed or AllowedDirs.create(studio.outputs)
    page = Page(studio, manager, allowed, shared_runs)
    s = studio.sampling
    weight_problems = studio.weight_problems()
    studio.outputs.mkdir(parents=True, exist_ok=True)

    # Gradio's cache (uploads, previews, copies of run files) is cleaned every 6 h of files older
    # than a day; run folders are never touched (a page re-copies what it shows).
    with gr.Blocks(title="LongVie 2", delete_cache=(6 * 3600, 24 * 3600)) as demo:
        session = gr.BrowserState(None, storage_key="longvie-app-session", secret=persistent_secret(studio.outputs))
        source = gr.State({"folder": None, "image": None, "depth": [], "track": []})
        loaded_prompts = gr.State([])
        current_job = gr.State(None)  # the job this page may cancel / stop (its own)
        follow_token = gr.State(None)  # what the next follow() shows

        gr.Markdown(f"# LongVie 2 — long controllable video\nConfig **{studio.config['preset']}** · one job at a "
                    "time (your place in the queue is shown) · clips are numbered from 0.")
        if weight_problems:
            gr.HTML(error_message("\n".join(weight_problems), title="The model weights are missing on the server; "
                                  "generation will not start."), elem_id="weights-warning")
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tabs() as input_tabs:
                    with gr.Tab("Control videos", id="tab-videos"):
                        first_frame = gr.File(label="First frame (PNG/JPEG)", file_count="single",
                                              elem_id="first-frame")
                        depth_files = gr.File(label="Depth videos, one per clip (depth_00.mp4 is clip 0; else "
                                                    "upload order)", file_count="multiple", elem_id="depth-files")
                        track_files = gr.File(label="Track videos, one per clip (track_00.mp4 is clip 0; else "
                                                    "upload order)", file_count="multiple", elem_id="track-files")
                        cond_file = gr.File(label="Prompts from a cond.json (optional)", elem_id="cond-file")
                    with gr.Tab("Condition folder", id="tab-folder"):
                        folder = gr.Textbox(label=f"Condition folder on the server (with cond.json), inside: "
                                                  f"{allowed.describe()}", elem_id="folder")
                        load_folder = gr.Button("Load folder", elem_id="load-folder")
                    with gr.Tab("Driving video", id="tab-driving"):
                        driving = gr.File(label="Driving video (at least 81 frames; 16 fps)", elem_id="driving")
                        with gr.Row():
                            depth_npy = gr.File(label="Disparity .npy (optional; replaces the depth model)",
                                                elem_id="depth-npy")
                            with gr.Column():
                                vda_checkpoint = gr.Textbox(label="Video Depth Anything checkpoint (a file inside "
                                                                  f"{allowed.describe()})")
                                depth_model = gr.Textbox(value=DEFAULT_DEPTH_ANYTHING_V2,
                                                         label="else Depth Anything V2 (hub id, or a folder inside "
                                                               "the shared folders)")
                                local_files = gr.Checkbox(label="Local files only (no download)")
                        with gr.Row():
                            tracker = gr.Radio(list(TRACK_BACKENDS), value="lk", label="Tracker")
                            grid = gr.Number(value=70, precision=0, label="Track grid (points per side)")
                            frame_step = gr.Number(value=1, precision=0, label="Frame step")
                        extract = gr.Button("Extract controls", elem_id="extract")
                        stages = gr.HTML(render_stages({}))
                    camera = camera_tab(studio, allowed)
                inputs_error = gr.HTML("", elem_id="inputs-error", elem_classes=["lv-field-error"])
                controls_info = gr.Markdown("No controls yet.", elem_id="controls-info")
                pairing_view = gr.HTML(render_pairing(Pairing()), elem_id="pairing")
                prompts = gr.Dataframe(headers=["clip", "prompt"], datatype=["number", "str"], type="array",
                                       value=[], interactive=True, label="Prompts, one row per clip",
                                       elem_id="prompts", wrap=True)
                prompts_error = gr.HTML("", elem_id="prompts-error", elem_classes=["lv-field-error"])
                with gr.Accordion("LoRA (optional)", open=False, elem_id="lora-section"):
                    lora_files = gr.File(label="LoRA files (.safetensors)", file_count="multiple",
                                         elem_id="lora-files")
                    loras = gr.Dataframe(headers=["LoRA file (uploaded name, or a file inside the shared folders)",
                                                  "scale"], datatype=["str", "number"], type="array", value=[],
                                         interactive=True, elem_id="loras")
                    lora_error = gr.HTML("", elem_id="lora-error", elem_classes=["lv-field-error"])
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
                    settings_error = gr.HTML("", elem_id="settings-error", elem_classes=["lv-field-error"])
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop_after = gr.Button("Stop after this clip", elem_id="stop-after-clip")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
                actions_error = gr.HTML("", elem_id="actions-error", elem_classes=["lv-field-error"])
            with gr.Column(scale=1):
                message = gr.HTML("", elem_id="message")
                status = gr.Markdown("Idle.", elem_id="status")
                progress_bar = gr.HTML("", elem_id="progress")
                preview = gr.Image(label="Live preview (the clip being denoised, a few frames)", type="numpy",
                                   interactive=False, elem_id="preview", height=200)
                clips = gr.HTML(render_clips([]), elem_id="clips")
                final_video = gr.Video(label="Stitched video", elem_id="final-video", interactive=False, height=320)
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
                run_id = gr.Textbox("", elem_id="run-id", elem_classes=["lv-hidden"], show_label=False)
        with gr.Accordion("Past runs", open=True):
            with gr.Row():
                runs = gr.Dropdown(choices=[], value=None, label="Run", elem_id="runs", scale=4)
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
            runs_error = gr.HTML("", elem_id="runs-error", elem_classes=["lv-field-error"])
        page.serve_block = clips
        field_outputs = {"inputs": inputs_error, "prompts": prompts_error, "lora": lora_error,
                         "settings": settings_error, "runs": runs_error}

        def field_errors(found: dict[str, list[str]] | None = None) -> dict:
            """Updates of every field's error box (empty ones cleared)."""
            found = found or {}
            return {field_outputs[name]: error_message("\n".join(found[name]), title=f"{FIELD_NAMES[name]}:")
                    if found.get(name) else "" for name in FIELDS}

        def summary(found: dict[str, list[str]], action: str = "generate") -> str:
            names = [f"{FIELD_NAMES[name]} ({len(found[name])})" for name in FIELDS if found.get(name)]
            lines = [p for name in FIELDS for p in found.get(name, [])]
            return error_message("\n".join(lines), title=f"Cannot {action}: see the marked fields — "
                                                         f"{', '.join(names)}.")

        # ---------------------------------------------------------------- controls and prompts
        def current_pairing(src: dict, ups: dict, frames, height_, width_) -> tuple[Pairing, str]:
            numbers, _ = check_page_settings({"num_frames": frames, "height": height_, "width": width_})
            shape = dict(num_frames=numbers["num_frames"], height=numbers["height"], width=numbers["width"],
                         resize=s.get("resize", "auto"))
            if ups.get("depth") or ups.get("track"):
                return pair_controls(ups.get("depth") or [], ups.get("track") or [], **shape), "uploads"
            if src.get("folder"):
                paired = pair_controls(src.get("depth") or [], src.get("track") or [], **shape, order="given")
                return paired, f"folder {Path(src['folder']).name}"
            return Pairing(), ""

        def describe_controls(paired: Pairing, where: str, image) -> str:
            if not paired.rows:
                return "No controls yet." + (f" First frame: {Path(image).name}." if image else "")
            return (f"Controls: {paired.clips} clip(s) from {where}; first frame: "
                    f"{Path(image).name if image else 'missing'}.")

        def refresh_controls(src, ups, image, table, loaded, frames, height_, width_, resize_prompts=True) -> dict:
            paired, where = current_pairing(src, ups, frames, height_, width_)
            image = _path(image) or src.get("image")
            update = {pairing_view: render_pairing(paired), controls_info: describe_controls(paired, where, image),
                      inputs_error: error_message("\n".join(paired.problems), title="Inputs:")
                      if paired.problems else ""}
            if resize_prompts and paired.rows:
                update[prompts] = resize_table(table, paired.clips or len(paired.rows), loaded)
            return update

        control_inputs = [source, first_frame, prompts, loaded_prompts, num_frames, height, width]
        control_outputs = [pairing_view, controls_info, inputs_error, prompts]
        # Upload handlers run one at a time, in the order of the uploads (they share the page's list).
        in_order = dict(concurrency_id="controls", concurrency_limit=1, show_progress="hidden")

        def on_controls(src, image, table, loaded, frames, height_, width_, request: gr.Request):
            try:
                return refresh_controls(src, page.uploads(request), image, table, loaded, frames, height_, width_)
            except Exception as err:  # noqa: BLE001
                logger.exception("controls")
                return {inputs_error: error_message(describe_error(err), title="Inputs:")}

        def upload_handler(kind: str, box):
            def handler(value, src, image, table, loaded, frames, height_, width_, request: gr.Request):
                files = replaced_uploads(value, page.uploads(request).get(kind) or [])
                page.set_uploads(request, **{kind: files})
                update = on_controls(src, image, table, loaded, frames, height_, width_, request)
                update[box] = files or None
                return update
            return handler

        for kind, box in (("depth", depth_files), ("track", track_files)):
            handler = upload_handler(kind, box)
            for event in (box.upload, box.delete, box.clear):
                event(handler, [box] + control_inputs, control_outputs + [box], **in_order)
        for event in (first_frame.upload, first_frame.clear):
            event(on_controls, control_inputs, control_outputs, **in_order)

        def on_settings(src, image, table, loaded, frames, height_, width_, request: gr.Request):
            update = on_controls(src, image, table, loaded, frames, height_, width_, request)
            return {k: v for k, v in update.items() if k is not prompts}

        for box in (num_frames, height, width):
            box.change(on_settings, control_inputs, control_outputs, **in_order)

        def on_cond_file(file, src, image, table, frames, height_, width_, request: gr.Request):
            ups = page.uploads(request)
            path = _path(file)
            if path is None:
                return {}
            try:
                problems = check_suffix(path, (".json",), "prompt list")
                if problems:
                    raise AppInputError(problems)
                entries, problems = load_conditions(path)
                if problems:
                    raise AppInputError([f"prompt list {Path(path).name}: cannot be read as a cond.json (a JSON list "
                                         'of {"text", "depth", "track"} objects)'])
                texts = [c.text for c in entries]
                paired, _ = current_pairing(src, ups, frames, height_, width_)
                count = (paired.clips or len(paired.rows)) if paired.rows else len(texts)
                return {loaded_prompts: texts, prompts: resize_table(prompt_rows(texts), count, texts),
                        prompts_error: ""}
            except Exception as err:  # noqa: BLE001
                return {prompts_error: error_message(describe_error(err), title="Prompts:")}

        cond_file.upload(on_cond_file, [cond_file, source, first_frame, prompts, num_frames, height, width],
                         [loaded_prompts, prompts, prompts_error], **in_order)

        def folder_source(path: Path, owner) -> tuple[dict, list[str]]:
            image, depth, track, texts = read_condition_folder(path, allowed)
            return ({"folder": str(path), "image": str(image) if image else None, "depth": [str(p) for p in depth],
                     "track": [str(p) for p in track]}, texts)

        def on_load_folder(path, session_id, src, image, frames, height_, width_, request: gr.Request):
            """The folder's controls and prompts replace the uploaded ones (the upload boxes are cleared;
            a first frame uploaded afterwards replaces the folder's)."""
            owner = owner_key(session_id)
            try:
                folder_path = page.server_folder(path, owner, "condition folder")
                src, texts = folder_source(folder_path, owner)
            except (NotAllowedError, AppInputError) as err:
                text = "\n".join(err.problems) if isinstance(err, AppInputError) else str(err)
                return {inputs_error: error_message(text, title="Condition folder:"),
                        message: error_message(text, title="Cannot load the folder:")}
            ups = page.set_uploads(request, depth=[], track=[])
            update = refresh_controls(src, ups, None, [], texts, frames, height_, width_)
            update.update({source: src, loaded_prompts: texts, first_frame: None, depth_files: None,
                           track_files: None, message: ok_message(f"Loaded {len(texts)} clip(s) from "
                                                                  f"{folder_path.name}."),
                           prompts: resize_table(prompt_rows(texts), len(texts), texts)})
            return update

        load_folder.click(on_load_folder, [folder, session, source, first_frame, num_frames, height, width],
                          [source, loaded_prompts, first_frame, depth_files, track_files, message]
                          + control_outputs, **in_order)

        def on_lora_upload(files, table):
            names = [Path(p).name for p in _paths(files)]
            rows = [[name, scale] for name, scale in lora_rows(table)]
            known = {row[0] for row in rows}
            rows += [[name, 1.0] for name in names if name not in known]
            return {loras: rows, lora_error: ""}

        lora_files.upload(on_lora_upload, [lora_files, loras], [loras, lora_error], queue=False)

        # ---------------------------------------------------------------- following a job or a run
        def static_view(name: str, viewer: str | None) -> dict:
            """A run folder without a job in memory (finished earlier, or before a restart)."""
            run = page.run_dir(name)
            if run is None or RunDir(run).load_manifest() is None:
                return {message: error_message(f"Run {name}: not found.", title="Cannot show that run:"),
                        status: "Idle."}
            views = studio.clip_views(run)
            video = run / "video.mp4"
            from .runs import summarize_run

            summary_ = summarize_run(run)
            update = {clips: render_clips(views, url=page.url), progress_bar: "",
                      status: f"Run {name}: {summary_.done}/{summary_.num_clips} clips"
                              + (" (read only)." if summary_.owner != viewer else "."),
                      final_video: page.cached(video) if video.is_file() else None,
                      downloads: [page.cached(video)] if video.is_file() else None}
            return update

        def job_status(job, snap: dict, viewer: str | None) -> tuple[str, str]:
            prefix = "" if job.owner == viewer else "Watching a run of another session (read only). "
            state = snap["state"]
            if state == "queued":
                place = manager.position(job)
                if place is not None:
                    position, ahead = place
                    return (f"{prefix}Waiting in the queue: position {position} — {ahead} job(s) ahead of yours.",
                            "")
            if snap["final"] is not None:
                return prefix + snap["final"].message, ""
            if snap["step"] is not None and state == "running":
                clip, step, steps = snap["step"]
                total = snap["num_clips"] or 1
                text = f"Clip {clip} ({clip + 1} of {total}) · step {step}/{steps}"
                if snap["cancel_requested"]:
                    text += " · cancelling after this step"
                elif snap["stop_requested"]:
                    text += f" · stopping after clip {clip}"
                return prefix + text, render_progress(clip * steps + step, total * steps)
            return prefix + (snap["status"] or "Starting ..."), ""

        async def follow(token, session_id, request: gr.Request):
            """Page updates while a job runs (polling the manager; a reload starts a new follower)."""
            viewer = owner_key(session_id)
            hash_ = request.session_hash if request is not None else None
            if not token:
                yield {message: gr.update()}  # nothing to follow (an empty dict would read as one value)
                return
            page.follow(hash_, token)
            job = manager.get(token)
            if job is None:
                yield static_view(token, viewer) if page.can_view(page.owner_of(token), viewer) else {
                    message: error_message(f"Run {token}: not found.", title="Cannot show that run:")}
                return
            if not page.can_view(job.owner, viewer):
                yield {message: error_message(f"Run {token}: not found.", title="Cannot show that run:")}
                return
            clips_key, preview_seen = None, 0
            async for snap in manager.snapshots(job, idle=True):
                if snap is None:  # nothing changed: stop if this page follows something else now
                    if not page.still_following(hash_, token):
                        return
                    continue
                text, bar = job_status(job, snap, viewer)
                update = {status: html.escape(text), progress_bar: bar}
                key = (tuple(snap["finished_clips"]), snap["active_clip"], snap["final"] is not None)
                if key != clips_key and snap["run_dir"] is not None:
                    clips_key = key
                    update[clips] = render_clips(studio.clip_views(snap["run_dir"]), active=snap["active_clip"],
                                                 url=page.url)
                if snap["preview_version"] != preview_seen and snap["preview"] is not None:
                    preview_seen = snap["preview_version"]
                    clip, step, steps = snap["preview_step"]
                    update[preview] = gr.update(value=snap["preview"],
                                                label=f"Live preview · clip {clip}, step {step}/{steps}")
                final = snap["final"]
                if final is not None:
                    if final.kind in ("done", "stopped") and final.video is not None and final.video.is_file():
                        cached = page.cached(final.video)
                        update.update({final_video: cached, downloads: [cached]})
                    if final.kind == "error":
                        update[message] = error_message(page.scrub(final.message),
                                                        title="The job stopped with an error:")
                    else:
                        update[message] = ok_message(final.message)
                    update[runs] = gr.update(choices=page.run_choices(viewer),
                                             value=token if job.owner == viewer and job.kind != "extract"
                                             else None)
                    if page.still_following(hash_, token):
                        yield update
                    return
                if not page.still_following(hash_, token):
                    return  # this page follows something else now
                yield update

        follow_outputs = [message, status, progress_bar, clips, preview, final_video, downloads, runs]

        def follow_after(event):
            """Chain a follower and the URL update after an action that sets ``follow_token``."""
            event.then(follow, [follow_token, session], follow_outputs, concurrency_limit=None,
                       show_progress="hidden")

        run_id.change(None, [run_id], None, js=SET_URL_JS)

        def start_following(job_id: str, request: gr.Request | None) -> None:
            page.follow(getattr(request, "session_hash", None), job_id)

        # ---------------------------------------------------------------- generate
        def on_generate(session_id, src, image, table, lora_table, lora_uploads, seed_, steps_, cfg_, height_,
                        width_, frames_, offload_, name, request: gr.Request):
            owner = owner_key(session_id)
            ups = page.uploads(request)
            found: dict[str, list[str]] = {name_: [] for name_ in FIELDS}
            numbers, problems = check_page_settings({"seed": seed_, "steps": steps_, "cfg": cfg_, "height": height_,
                                                     "width": width_, "num_frames": frames_},
                                                    int(s.get("history_frames", 8)), s.get("resize", "auto"))
            found["settings"] += problems
            if offload_ not in OFFLOAD_MODES:
                found["settings"].append(f"Memory mode {offload_!r}: pick one of {', '.join(OFFLOAD_MODES)}")
            image_path = _path(image) or src.get("image")
            if image_path is None:
                found["inputs"].append("first frame: missing — upload an image (PNG/JPEG) or load a condition "
                                       "folder with first.png")
            paired, _ = current_pairing(src, ups, frames_, height_, width_)
            found["inputs"] += paired.problems
            if not paired.rows:
                found["inputs"].append("control videos: missing — upload one depth and one track video per clip, "
                                       "extract them from a driving video, or load a condition folder")
            texts = []
            try:
                texts = parse_prompt_table(table, paired.clips or None)
            except AppInputError as err:
                found["prompts"] += err.problems
            uploaded = {Path(p).name: p for p in _paths(lora_uploads)}
            specs, problems = lora_specs(lora_table, uploaded,
                                         lambda value, what: page.server_folder(value, owner, what))
            found["lora"] += problems
            reset = {final_video: None, downloads: None}
            if any(found.values()):
                return {**field_errors(found), message: summary(found), status: "Idle." if not current_busy(owner)
                        else gr.update(), follow_token: None, **reset}
            gen_request = GenerationRequest(
                image=image_path, depth=paired.depth[:len(texts)], track=paired.track[:len(texts)], texts=texts,
                seed=numbers["seed"] or 0, steps=numbers["steps"], cfg=numbers["cfg"], height=numbers["height"],
                width=numbers["width"], num_frames=numbers["num_frames"], offload=offload_, name=name,
                loras=specs, owner=owner)
            try:
                prepared = studio.prepare_new_run(gen_request)
            except Exception as err:  # noqa: BLE001
                if not isinstance(err, AppInputError):
                    logger.exception("generate")
                found = classify([page.scrub(p) for p in (err.problems if isinstance(err, AppInputError)
                                                          else [describe_error(err)])])
                return {**field_errors(found), message: summary(found), follow_token: None, **reset}
            job = manager.submit(prepared.run_dir.name, "generate", owner,
                                 lambda control: studio.run_prepared(prepared, control), run_dir=prepared.run_dir,
                                 on_discard=lambda: studio.discard(prepared))
            start_following(job.id, request)
            return {**field_errors(), message: ok_message(f"Run {job.id} queued: {len(texts)} clip(s)."),
                    follow_token: job.id, current_job: job.id, run_id: job.id, preview: None,
                    clips: render_clips(studio.clip_views(prepared.run_dir), url=page.url), **reset}

        def current_busy(owner) -> bool:
            return any(job.active for job in manager.jobs_of(owner))

        generate_event = generate.click(
            on_generate, [session, source, first_frame, prompts, loras, lora_files, seed, steps, cfg, height,
                          width, num_frames, offload, run_name],
            [message, status, follow_token, current_job, run_id, preview, clips, final_video, downloads]
            + list(field_outputs.values()), concurrency_limit=None)
        generate_event.then(None, None, None, js=SHOW_ERROR_JS)
        follow_after(generate_event)

        # ---------------------------------------------------------------- cancel / stop after this clip
        def owner_request(action, job_id, session_id) -> dict:
            if not job_id:
                return {message: ok_message("This page has no job of yours to act on."), actions_error: ""}
            try:
                return {message: ok_message(action(job_id, owner_key(session_id))), actions_error: ""}
            except NotYours:
                text = error_message("Only the session that started this job can stop it.", title="Not your job:")
                return {message: text, actions_error: text}
            except LookupError:
                return {message: ok_message("That job has already ended."), actions_error: ""}

        # ---------------------------------------------------------------- the camera tab
        from types import SimpleNamespace

        from .camera_ui import wire_camera_tab

        wire_camera_tab(camera, SimpleNamespace(
            page=page, manager=manager, studio=studio, input_tabs=input_tabs, main_only=[
                inputs_error, controls_info, pairing_view, prompts, prompts_error, generate],
            session=session, message=message, status=status,
            current_job=current_job, follow_token=follow_token, run_id=run_id, preview=preview, clips=clips,
            final_video=final_video, downloads=downloads, seed=seed, steps=steps, cfg=cfg, height=height,
            width=width, num_frames=num_frames, offload=offload, run_name=run_name, loras=loras,
            lora_files=lora_files, settings_error=settings_error, lora_error=lora_error, follow_after=follow_after,
            start_following=start_following, job_status=job_status, error_message=error_message,
            ok_message=ok_message, describe_error=describe_error, resize_table=resize_table, path_of=_path,
            paths_of=_paths, lora_specs=lora_specs, render_clips=render_clips, show_error_js=SHOW_ERROR_JS))

        cancel.click(lambda job_id, sid: owner_request(manager.cancel, job_id, sid), [current_job, session],
                     [message, actions_error], queue=False)
        stop_after.click(lambda job_id, sid: owner_request(manager.stop_after_clip, job_id, sid),
                         [current_job, session], [message, actions_error], queue=False)

        # ---------------------------------------------------------------- past runs
        def on_refresh(session_id):
            return gr.update(choices=page.run_choices(owner_key(session_id)))

        refresh.click(on_refresh, session, runs, queue=False)

        def on_show(name, session_id, request: gr.Request):
            viewer = owner_key(session_id)
            if not name:
                return {runs_error: error_message("Pick a run first.", title="Past runs:")}
            if not page.can_view(page.owner_of(name), viewer):
                return {runs_error: error_message(f"Run {name}: not found.", title="Past runs:")}
            start_following(name, request)
            job = manager.get(name)
            mine = job is not None and job.owner == viewer
            return {runs_error: "", follow_token: name, current_job: name if mine else None, run_id: name,
                    final_video: None, downloads: None, preview: None}

        show_outputs = [runs_error, follow_token, current_job, run_id, final_video, downloads, preview]
        follow_after(show.click(on_show, [runs, session], show_outputs, concurrency_limit=None))
        follow_after(runs.input(on_show, [runs, session], show_outputs, concurrency_limit=None))

        def submit_on_run(name, session_id, request, kind: str, start, what: str) -> dict:
            owner = owner_key(session_id)
            run = page.run_dir(name)
            if run is None:
                return {runs_error: error_message("Pick a run first.", title="Past runs:")}
            if page.owner_of(name) != owner:
                return {runs_error: error_message(f"Run {name} belongs to another session: it can be shown and "
                                                  "zipped, not changed.", title="Past runs:")}
            try:
                job = manager.submit(name, kind, owner, start, run_dir=run)
            except ValueError:
                return {runs_error: error_message(f"Run {name} already has a job queued or running.",
                                                  title="Past runs:")}
            start_following(job.id, request)
            return {runs_error: "", message: ok_message(f"{what} {name}: queued."), follow_token: job.id,
                    current_job: job.id, run_id: job.id, final_video: None, downloads: None, preview: None}

        job_outputs = [runs_error, message, follow_token, current_job, run_id, final_video, downloads, preview]

        def on_resume(name, offload_, session_id, request: gr.Request):
            run = page.run_dir(name)
            if run is not None and is_explore_run(run):  # the camera tab's Explore: through longvie.camera.explore
                return submit_on_run(name, session_id, request, "resume",
                                     lambda control: CameraJobs(studio).resume(run, offload_, control), "Resuming")
            return submit_on_run(name, session_id, request, "resume",
                                 lambda control: studio.resume(run, offload_, control), "Resuming")

        follow_after(resume.click(on_resume, [runs, offload, session], job_outputs, concurrency_limit=None))

        def on_redo(name, clip, seed_, text, offload_, session_id, request: gr.Request):
            run = page.run_dir(name)
            if run is not None and is_explore_run(run):
                return submit_on_run(name, session_id, request, "redo",
                                     lambda control: CameraJobs(studio).redo(run, clip, seed_, text, offload_,
                                                                             control),
                                     f"Regenerating from clip {clip}:")
            return submit_on_run(name, session_id, request, "redo",
                                 lambda control: studio.redo(run, clip, seed_, text, offload_, control),
                                 f"Regenerating from clip {clip}:")

        follow_after(redo.click(on_redo, [runs, redo_clip, redo_seed, redo_prompt, offload, session], job_outputs,
                                concurrency_limit=None))

        def on_zip(name, session_id):
            viewer = owner_key(session_id)
            run = page.run_dir(name)
            if run is None or not page.can_view(page.owner_of(name), viewer):
                return {runs_error: error_message("Pick a run first." if run is None else f"Run {name}: not found.",
                                                  title="Past runs:")}
            try:
                archive = studio.zip(run)
            except Exception as err:  # noqa: BLE001
                return {runs_error: error_message(describe_error(err), title="Past runs:")}
            video = run / "video.mp4"
            files = ([page.cached(video)] if video.is_file() else []) + [page.cached(archive)]
            return {downloads: files, runs_error: "",
                    message: ok_message(f"Zipped {name} ({archive.stat().st_size // 1024} KiB).")}

        zip_button.click(on_zip, [runs, session], [downloads, runs_error, message], concurrency_limit=None)

        # ---------------------------------------------------------------- control extraction
        async def on_extract(video, npy, vda, model, local, track_backend, grid_size, step, session_id, src, frames,
                             height_, width_, request: gr.Request):
            owner = owner_key(session_id)
            try:
                vda_path = str(page.server_folder(vda, owner, "Video Depth Anything checkpoint")) \
                    if (vda or "").strip() else None
                model = (model or "").strip() or DEFAULT_DEPTH_ANYTHING_V2
                if model.startswith(("/", ".", "~")) or Path(model).expanduser().exists():
                    model = str(page.server_folder(model, owner, "depth model folder"))
                options = ExtractionOptions(frame_step=int(step or 1), depth_npy=_path(npy), vda_checkpoint=vda_path,
                                            depth_model=model, local_files_only=bool(local),
                                            track_backend=track_backend, grid=int(grid_size or 70))
            except (NotAllowedError, ValueError, TypeError) as err:
                yield {inputs_error: error_message(str(err), title="Driving video:"),
                       message: error_message(str(err), title="Cannot extract:")}
                return
            job_id = f"controls-{uuid.uuid4().hex[:8]}"
            job = manager.submit(job_id, "extract", owner,
                                 lambda control: studio.extract(_path(video), options, control, owner=owner))
            start_following(job_id, request)
            yield {message: ok_message("Extraction queued."), current_job: job_id, inputs_error: ""}
            async for snap in manager.snapshots(job):
                text, _ = job_status(job, snap, owner)
                update = {stages: render_stages(snap["stages"]), status: html.escape(text)}
                final = snap["final"]
                if final is not None:
                    if final.kind == "done":
                        try:
                            src, texts = folder_source(final.folder, owner)
                        except AppInputError as err:
                            update[message] = error_message("\n".join(err.problems))
                        else:
                            ups = page.set_uploads(request, depth=[], track=[])
                            update.update(refresh_controls(src, ups, None, [], texts, frames, height_, width_))
                            update.update({source: src, loaded_prompts: texts,
                                           prompts: prompt_rows(texts), message: ok_message(final.message),
                                           folder: str(Path(final.folder).relative_to(studio.outputs.parent))
                                           if Path(final.folder).is_relative_to(studio.outputs.parent)
                                           else final.folder.name,
                                           first_frame: None, depth_files: None, track_files: None})
                    elif final.kind == "error":
                        text = page.scrub(final.message)
                        update[message] = error_message(text, title="Extraction stopped:")
                        update[inputs_error] = error_message(text, title="Driving video:")
                    else:
                        update[message] = ok_message(final.message)
                    yield update
                    return
                yield update

        extract.click(on_extract, [driving, depth_npy, vda_checkpoint, depth_model, local_files, tracker, grid,
                                   frame_step, session, source, num_frames, height, width],
                      [stages, status, source, loaded_prompts, prompts, controls_info, pairing_view,
                       inputs_error, message, folder, first_frame, depth_files, track_files, current_job],
                      concurrency_limit=None, show_progress="hidden")

        # ---------------------------------------------------------------- page load
        def on_load(session_id, request: gr.Request):
            session_id = session_id or new_session_id()
            viewer = owner_key(session_id)
            update = {session: session_id, runs: gr.update(choices=page.run_choices(viewer), value=None),
                      follow_token: None, current_job: None}
            wanted = (dict(request.query_params).get("run") or "").strip() if request is not None else ""
            if wanted:
                if page.can_view(page.owner_of(wanted), viewer):
                    job = manager.get(wanted)
                    start_following(wanted, request)
                    update.update({follow_token: wanted, run_id: wanted,
                                   current_job: wanted if job is not None and job.owner == viewer else None})
                    update.update(run_settings(page.run_dir(wanted)))
                else:
                    update[message] = error_message(f"Run {wanted}: not found.", title="Cannot show that run:")
            else:
                mine = [job for job in manager.jobs_of(viewer)
                        if job.active and job.kind not in ("extract", "camera-preview")]
                if mine:
                    update[status] = ("Idle. Your job " + ", ".join(job.id for job in mine)
                                      + " is still queued or running: pick it in Past runs (Show) to follow it.")
            return update

        def run_settings(run: Path | None) -> dict:
            """The settings and prompts a run was made with, back in their fields (a reopened page)."""
            try:
                manifest = RunDir(run).load_manifest() if run is not None else None
            except ValueError:
                manifest = None
            if not manifest:
                return {}
            recorded = manifest.get("settings") or {}
            update = {box: recorded[key] for key, box in (("steps", steps), ("cfg", cfg), ("height", height),
                                                          ("width", width), ("num_frames", num_frames))
                      if key in recorded}
            update[seed] = manifest.get("seed", 0)
            texts = [((record or {}).get("inputs") or {}).get("text", "") for record in manifest.get("clips") or []]
            if texts:
                update[prompts] = prompt_rows(texts)
            return update

        load_event = demo.load(on_load, [session], [session, runs, follow_token, current_job, run_id, message,
                                                    status, steps, cfg, height, width, num_frames, seed, prompts],
                               queue=False)
        follow_after(load_event)
    demo.longvie_page = page
    return demo


def launch(studio: Studio, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           logins: list[tuple[str, str]] | None = None, allowed: AllowedDirs | None = None,
           shared_runs: bool = False) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app(studio, allowed=allowed, shared_runs=shared_runs)
    demo.queue(default_concurrency_limit=4, max_size=64)
    # Nothing under the outputs folder is served by its path (allowed_paths is empty): the page
    # copies each file it shows into gradio's cache (content-addressed names) for the session that
    # may see it.
    demo.launch(server_name=host, server_port=port, share=share, auth=logins or None, allowed_paths=[],
                show_error=False, inbrowser=False, css=CSS,
                auth_message="LongVie 2 — log in with the user and password the server was started with.")
