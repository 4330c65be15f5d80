"""The page's Camera tab (Gradio): a photo and a camera move -> Preview path -> Generate.

:func:`camera_tab` draws the tab inside the page's input tabs; :func:`wire_camera_tab` connects it
once the page's shared parts exist (settings, LoRA, message, status, Cancel / Stop after this clip,
the follower of runs). The work is :class:`longvie.app.camera.CameraJobs`' (jobs of the browser
session in the app's queue). The page helpers it needs (messages, the prompt table) come from
:mod:`longvie.app.ui` through ``ctx``, so that this module does not import the page module.

Element ids (stable; docs/app.md): camera-photo, camera-photo-server, camera-depth, camera-fov,
camera-path, camera-speed, camera-angle, camera-clips, camera-seconds, camera-length, camera-prompt,
camera-prompts, camera-explore, camera-preview-button, camera-generate, camera-stages,
camera-path-plot, camera-preview-video, and the error boxes camera-photo-error, camera-depth-error,
camera-path-error, camera-prompt-error, camera-error.
"""
from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..camera.paths import DEFAULT_ANGLE_RATE, PRESETS
from .access import NotAllowedError, owner_key, read_owner
from .camera import STAGE_LABELS, CameraJobs, CameraRequest, camera_fields, clip_count
from .inputs import AppInputError

__all__ = ["CameraTab", "camera_tab", "wire_camera_tab", "render_camera_stages", "CAMERA_STAGES", "DEFAULT_PATH"]

logger = logging.getLogger("longvie.app")

CAMERA_STAGES = ("depth", "rendering", "depth videos", "track videos", "preview")  # longvie.camera.STAGES
DEFAULT_PATH = "dolly_in"
BOXES = {"photo": ("photo_error", "Photo:"), "geometry": ("depth_error", "Depth and field of view:"),
         "path": ("path_error", "Camera path and length:"), "prompts": ("prompts_error", "Prompts:"),
         "camera": ("error", "Camera:")}


@dataclass
class CameraTab:
    """The tab's components."""

    photo: gr.File
    photo_server: gr.Textbox
    photo_error: gr.HTML
    depth: gr.File
    fov: gr.Number
    depth_error: gr.HTML
    path: gr.Dropdown
    speed: gr.Number
    angle: gr.Number
    clips: gr.Number
    seconds: gr.Number
    length: gr.Markdown
    path_error: gr.HTML
    prompt: gr.Textbox
    prompts: gr.Dataframe
    prompts_error: gr.HTML
    explore: gr.Checkbox
    preview_button: gr.Button
    generate: gr.Button
    error: gr.HTML
    stages: gr.HTML
    path_plot: gr.Image
    preview_video: gr.Video
    state: gr.State  # {"folder": camera folder of the last preview, "key": what its controls were made from}


def render_camera_stages(progress: dict[str, tuple[int, int]], line: str = "") -> str:
    """One progress bar per stage of the camera library (depth, rendering, depth videos, track videos, preview),
    under a status ``line``."""
    bars = [f'<div class="lv-how" id="camera-status">{html.escape(line)}</div>'] if line else []
    for stage in CAMERA_STAGES:
        done, total = progress.get(stage, (0, 0))
        value = f'value="{done}" max="{max(total, 1)}"' if total else 'value="0" max="1"'
        count = f"{done}/{total}" if total else "—"
        bars.append(f'<div><label>{html.escape(STAGE_LABELS[stage])} <span>{count}</span></label>'
                    f'<progress {value}></progress></div>')
    return '<div class="lv-stages" id="camera-stages-bars">' + "".join(bars) + "</div>"


def length_text(clips, seconds, frames, fps: int) -> str:
    """"2 clip(s) of 81 frames: 161 frames, 10.06 s at 16 fps" (or how to fix the fields)."""
    try:
        frames = int(frames)
        if frames < 2:
            raise ValueError
        count = clip_count(None if clips in (None, "") else int(clips), None if seconds in (None, "") else
                           float(seconds), frames, fps)
    except (TypeError, ValueError):
        return "Length: give the number of clips (or seconds) and the frames per clip in Settings."
    if count < 1:
        return "Length: at least one clip."
    total = count * (frames - 1) + 1
    return f"Length: {count} clip(s) of {frames} frames = {total} frames, {total / fps:.2f} s at {fps} fps."


def _number_value(value):
    """A field's value, None when empty (an empty text box, a cleared number box)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str):
        return value.strip() or None
    return value


def camera_tab(allowed_description: str, frames_per_clip: int, fps: int) -> CameraTab:
    """The Camera tab (call inside the page's ``gr.Tabs``)."""
    with gr.Tab("Camera", id="tab-camera"):
        gr.Markdown("One photo and a camera move: the photo is lifted to 3D (its depth from the file you give, "
                    "else a depth model), the camera moves through it, and the depth and track controls are "
                    "rendered. **Preview path** shows the path and the controls; **Generate** samples them with the "
                    "settings below.")
        with gr.Row():
            photo = gr.File(label="Photo (PNG/JPEG)", file_count="single", elem_id="camera-photo")
            depth = gr.File(label="Depth map of the photo (optional: .npy/.npz in metres, 16-bit PNG in mm)",
                            file_count="single", elem_id="camera-depth")
        photo_server = gr.Textbox(label=f"or a photo on the server, inside: {allowed_description}",
                                  elem_id="camera-photo-server")
        photo_error = gr.HTML("", elem_id="camera-photo-error", elem_classes=["lv-field-error"])
        with gr.Row():
            path = gr.Dropdown(list(PRESETS), value=DEFAULT_PATH, label="Camera path", elem_id="camera-path")
            speed = gr.Textbox("", label="Speed (m/s)", placeholder="5 % of the scene's depth per s",
                               elem_id="camera-speed", max_lines=1, min_width=90)
            angle = gr.Number(DEFAULT_ANGLE_RATE, label="Angle (degrees per s)", elem_id="camera-angle", min_width=90)
        with gr.Row():
            clips = gr.Number(2, precision=0, label="Clips", elem_id="camera-clips", min_width=90)
            seconds = gr.Textbox("", label="or Seconds (wins when given)", placeholder="the clips'",
                                 elem_id="camera-seconds", max_lines=1, min_width=90)
            fov = gr.Textbox("", label="Field of view (degrees)", placeholder="60 (horizontal)", elem_id="camera-fov",
                             max_lines=1, min_width=90)
        length = gr.Markdown(length_text(2, None, frames_per_clip, fps), elem_id="camera-length")
        path_error = gr.HTML("", elem_id="camera-path-error", elem_classes=["lv-field-error"])
        depth_error = gr.HTML("", elem_id="camera-depth-error", elem_classes=["lv-field-error"])
        prompt = gr.Textbox(label="Prompt for every clip (the scene, and the camera move)", lines=2,
                            elem_id="camera-prompt")
        with gr.Accordion("Per-clip prompts (optional: a row's text replaces the prompt above for that clip)",
                          open=False, elem_id="camera-prompts-section"):
            prompts = gr.Dataframe(headers=["clip", "prompt"], datatype=["number", "str"], type="array",
                                   value=[[i, ""] for i in range(2)], interactive=True, elem_id="camera-prompts",
                                   wrap=True)
        prompts_error = gr.HTML("", elem_id="camera-prompt-error", elem_classes=["lv-field-error"])
        explore = gr.Checkbox(label="Explore: a 3D memory that grows clip by clip (each clip's controls are rendered "
                                    "from the photo plus the clips generated before it)", elem_id="camera-explore")
        with gr.Row():
            preview_button = gr.Button("Preview path", elem_id="camera-preview-button")
            generate = gr.Button("Generate", variant="primary", elem_id="camera-generate")
        error = gr.HTML("", elem_id="camera-error", elem_classes=["lv-field-error"])
        stages = gr.HTML(render_camera_stages({}), elem_id="camera-stages")
        path_plot = gr.Image(label="The path seen from above", type="filepath", interactive=False,
                             elem_id="camera-path-plot", height=260)
        preview_video = gr.Video(label="Preview: the photo re-projected | depth | tracks", interactive=False,
                                 elem_id="camera-preview-video", height=200)
        state = gr.State(None)
    return CameraTab(photo, photo_server, photo_error, depth, fov, depth_error, path, speed, angle, clips, seconds,
                     length, path_error, prompt, prompts, prompts_error, explore, preview_button, generate, error,
                     stages, path_plot, preview_video, state)


def wire_camera_tab(tab: CameraTab, ctx: SimpleNamespace) -> None:
    """Connect the tab's events. ``ctx``: the page's shared components and helpers (see :func:`build_app`)."""
    page, manager, studio = ctx.page, ctx.manager, ctx.studio
    jobs = CameraJobs(studio)
    fps = int(studio.sampling.get("fps", 16))
    error_message, ok_message = ctx.error_message, ctx.ok_message
    boxes = {name: getattr(tab, attr) for name, (attr, _) in BOXES.items()}

    # ---------------------------------------------------------------- the main tab's parts off in this tab
    def on_tab(evt: gr.SelectData):
        """The control videos' pairing, prompt table and Generate button belong to the other input tabs."""
        camera = evt.value == "Camera" or evt.index == "tab-camera"
        return [gr.update(visible=not camera) for _ in ctx.main_only]

    ctx.input_tabs.select(on_tab, None, ctx.main_only, queue=False, show_progress="hidden")

    # ---------------------------------------------------------------- length and the prompt table
    def on_length(clips_, seconds_, frames_, table):
        update = {tab.length: length_text(_number_value(clips_), _number_value(seconds_), _number_value(frames_),
                                          fps)}
        try:
            count = clip_count(None if _number_value(clips_) is None else int(clips_), _number_value(seconds_),
                               int(frames_), fps)
        except (TypeError, ValueError, ZeroDivisionError):
            return update
        if 1 <= count <= 1000:
            update[tab.prompts] = ctx.resize_table(table, count)
        return update

    for box in (tab.clips, tab.seconds, ctx.num_frames):
        box.change(on_length, [tab.clips, tab.seconds, ctx.num_frames, tab.prompts], [tab.length, tab.prompts],
                   queue=False, show_progress="hidden")

    # ---------------------------------------------------------------- checks
    def errors_update(problems: list[str], action: str) -> dict:
        """Every camera field's error box, the main settings/LoRA boxes and the summary."""
        found = camera_fields([page.scrub(p) for p in problems])
        update = {box: error_message("\n".join(found[name]), title=BOXES[name][1]) if found[name] else ""
                  for name, box in boxes.items()}
        update[ctx.settings_error] = error_message("\n".join(found["settings"]), title="Settings:") \
            if found["settings"] else ""
        update[ctx.lora_error] = error_message("\n".join(found["lora"]), title="LoRA:") if found["lora"] else ""
        if problems:
            lines = [p for name in found for p in found[name]]
            update[ctx.message] = error_message("\n".join(lines), title=f"Cannot {action}: see the marked fields.")
        return update

    def build_request(session_id, photo, photo_server, depth, fov, path, speed, angle, clips_, seconds_, prompt,
                      table, explore, seed, steps, cfg, height, width, frames, offload, name, lora_table,
                      lora_uploads) -> CameraRequest:
        """The request of the tab's fields (raises AppInputError for what the page itself resolves)."""
        owner = owner_key(session_id)
        problems = []
        photo_path = ctx.path_of(photo)
        if photo_path is None and (photo_server or "").strip():
            try:
                photo_path = str(page.server_folder(photo_server, owner, "Photo"))
            except NotAllowedError as err:
                problems.append(str(err))
        depth_path = ctx.path_of(depth)
        names = {p: Path(p).name for p in (photo_path, depth_path) if p}
        if hasattr(table, "values") and hasattr(table, "columns"):
            table = table.values.tolist()
        texts = [("" if row is None or len(row) < 2 or row[1] is None or row[1] != row[1] else str(row[1]))
                 for row in (table or [])]
        uploaded = {Path(p).name: p for p in ctx.paths_of(lora_uploads)}
        specs, lora_problems = ctx.lora_specs(lora_table, uploaded,
                                              lambda value, what: page.server_folder(value, owner, what))
        problems += lora_problems
        if problems:
            raise AppInputError(problems)
        return CameraRequest(photo=photo_path, path=path, speed=_number_value(speed), angle=_number_value(angle),
                             clips=_number_value(clips_), seconds=_number_value(seconds_), depth=depth_path,
                             fov=_number_value(fov), prompt=prompt or "", prompts=texts, explore=bool(explore),
                             seed=seed, steps=steps, cfg=cfg, height=height, width=width, num_frames=frames,
                             offload=offload, name=name, loras=specs, owner=owner, names=names)

    def checked_request(*values):
        request = build_request(*values)
        return request, jobs.check(request)

    fields = [ctx.session, tab.photo, tab.photo_server, tab.depth, tab.fov, tab.path, tab.speed, tab.angle, tab.clips,
              tab.seconds, tab.prompt, tab.prompts, tab.explore, ctx.seed, ctx.steps, ctx.cfg, ctx.height, ctx.width,
              ctx.num_frames, ctx.offload, ctx.run_name, ctx.loras, ctx.lora_files]
    error_outputs = list(boxes.values()) + [ctx.settings_error, ctx.lora_error, ctx.message]

    # ---------------------------------------------------------------- Preview path
    async def on_preview(session_id, photo, photo_server, depth, fov, path, speed, angle, clips_, seconds_, prompt,
                         table, explore, seed, steps, cfg, height, width, frames, offload, name, lora_table,
                         lora_uploads):
        values = (session_id, photo, photo_server, depth, fov, path, speed, angle, clips_, seconds_, prompt, table,
                  explore, seed, steps, cfg, height, width, frames, offload, name, lora_table, lora_uploads)
        try:
            camera_request, checked = checked_request(*values)
        except AppInputError as err:
            yield errors_update(err.problems, "preview the path")
            return
        except Exception as err:  # noqa: BLE001 - a message in the page, never a dead handler
            logger.exception("camera preview")
            yield errors_update([f"Camera: {ctx.describe_error(err)}"], "preview the path")
            return
        owner = camera_request.owner
        folder = jobs.new_folder(f"{Path(checked.plan.image).stem}-{checked.spec.preset}")
        job = manager.submit(folder.name, "camera-preview", owner, lambda control: jobs.preview(checked, folder,
                                                                                               control))
        # The page's status line keeps following the run it shows; the preview reports in its own stages box.
        yield {**errors_update([], ""), ctx.message: ok_message("Rendering the camera path ..."),
               ctx.current_job: job.id, tab.stages: render_camera_stages({}), tab.path_plot: None,
               tab.preview_video: None}
        async for snap in manager.snapshots(job):
            text, _ = ctx.job_status(job, snap, owner)
            update = {tab.stages: render_camera_stages(snap["stages"], text)}
            final = snap["final"]
            if final is not None:
                if final.kind == "done":
                    update.update({tab.path_plot: page.cached(folder / "path_topdown.png"),
                                   tab.preview_video: page.cached(folder / "preview.mp4"),
                                   tab.state: {"folder": str(folder), "key": checked.controls_key()},
                                   ctx.message: ok_message(final.message)})
                elif final.kind == "error":
                    problems = [line[2:] if line.startswith("- ") else line
                                for line in page.scrub(final.message).splitlines() if line.strip()]
                    update.update(errors_update(problems, "preview the path"))
                else:
                    update[ctx.message] = ok_message(final.message)
                yield update
                return
            yield update

    preview_event = tab.preview_button.click(
        on_preview, fields, error_outputs + [ctx.current_job, tab.stages, tab.path_plot, tab.preview_video,
                                             tab.state],
        concurrency_limit=None, show_progress="hidden")
    preview_event.then(None, None, None, js=ctx.show_error_js)

    # ---------------------------------------------------------------- Generate
    def on_generate(session_id, photo, photo_server, depth, fov, path, speed, angle, clips_, seconds_, prompt, table,
                    explore, seed, steps, cfg, height, width, frames, offload, name, lora_table, lora_uploads, state,
                    request: gr.Request):
        values = (session_id, photo, photo_server, depth, fov, path, speed, angle, clips_, seconds_, prompt, table,
                  explore, seed, steps, cfg, height, width, frames, offload, name, lora_table, lora_uploads)
        reset = {ctx.final_video: None, ctx.downloads: None}
        try:
            camera_request, checked = checked_request(*values)
            run_dir = jobs.run_dir(camera_request.name)
        except AppInputError as err:
            return {**errors_update(err.problems, "generate"), ctx.follow_token: None, **reset}
        except Exception as err:  # noqa: BLE001
            logger.exception("camera generate")
            return {**errors_update([f"Camera: {ctx.describe_error(err)}"], "generate"), ctx.follow_token: None,
                    **reset}
        owner = camera_request.owner
        if camera_request.explore:
            job = manager.submit(run_dir.name, "explore", owner,
                                 lambda control: jobs.explore(checked, run_dir, control), run_dir=run_dir)
            note = "Explore: each clip's controls are rendered from the 3D memory when its turn comes."
        else:
            folder = Path(state["folder"]) if state and state.get("key") == checked.controls_key() else None
            if folder is not None and (not (folder / "cond.json").is_file() or read_owner(folder) != owner):
                folder = None
            job = manager.submit(run_dir.name, "generate", owner,
                                 lambda control: jobs.generate(checked, run_dir, folder, control), run_dir=run_dir)
            note = ("The previewed controls are used." if folder is not None else
                    "The path is rendered first (the fields changed since the preview, or there was none).")
        ctx.start_following(job.id, request)
        return {**errors_update([], ""), ctx.message: ok_message(f"Run {job.id} queued: {checked.num_clips} clip(s). "
                                                                 f"{note}"),
                ctx.follow_token: job.id, ctx.current_job: job.id, ctx.run_id: job.id, ctx.preview: None,
                ctx.clips: ctx.render_clips([]), **reset}

    generate_event = tab.generate.click(
        on_generate, fields + [tab.state],
        error_outputs + [ctx.follow_token, ctx.current_job, ctx.run_id, ctx.preview, ctx.clips, ctx.final_video,
                         ctx.downloads], concurrency_limit=None)
    generate_event.then(None, None, None, js=ctx.show_error_js)
    ctx.follow_after(generate_event)
