"""The page in a real browser: headless Debian Chromium driven by playwright (``executable_path``;
no browser download), against ONE ``python -m longvie.app --preset tiny`` server on a free local
port for the whole module, and one browser with a fresh context (= a fresh browser session) per
visitor.

What is checked (issue 22): controls uploaded in shuffled order land on the right clips (the run's
inputs are compared with the files by content); uploading again replaces; the prompt table follows
the number of clips; errors appear next to their field and stay; a second browser session cannot
see or cancel the first one's job; a reload during generation reattaches (the run id is in the URL)
and the video completes; messages are still there 1 s after they appear; the live preview image
changes during a clip; the owner's Cancel stops its job. One run (3 tiny clips) serves every check. The Camera
tab: field errors, Preview path (plot and video), Generate (a 2-clip run of one step). Screenshots go to
``$LONGVIE_TEST_ARTEFACTS`` (default: the test's tmp folder). Skips when playwright or Chromium
(``$LONGVIE_CHROMIUM``, default /usr/bin/chromium) is missing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("LONGVIE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HEIGHT, WIDTH, FRAMES, STEPS = 32, 48, 9, 3
STEP_DELAY = 0.6  # seconds per denoising step: time to reload, to look at previews, to press buttons

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The synthetic example with 4 prompts (controls for 3 clips are uploaded); copies of the
    controls under other names (the clip number after the kind) to upload in shuffled order."""
    from longvie.examples.synthetic import make_synthetic_example

    cond = make_synthetic_example(tmp_path_factory.mktemp("example"), clips=4, height=HEIGHT, width=WIDTH,
                                  frames_per_clip=FRAMES, reference=False)
    folder = cond.parent
    renamed = folder / "renamed"
    renamed.mkdir()
    for index in range(3):
        shutil.copyfile(folder / f"depth_0{index}.mp4", renamed / f"scene-depth-{index}.mp4")
        shutil.copyfile(folder / f"track_0{index}.mp4", renamed / f"scene_track{index}.mp4")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on 127.0.0.1:<free port>, tiny preset, its own cache and output folders."""
    root = tmp_path_factory.mktemp("app")
    port = free_port()
    env = {**os.environ, "LONGVIE_CACHE": str(root / "cache"), "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(root / "gradio"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "longvie.app", "--preset", "tiny", "--port", str(port), "--outputs",
         str(root / "outputs"), "--step-delay", str(STEP_DELAY)], cwd=REPO, env=env, stdout=log,
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the app exited ({process.returncode}):\n{(root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer within 120 s:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": url, "process": process, "outputs": root / "outputs", "log": root / "server.log"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def visitor(browser):
    """A new browser session (its own local storage, so its own session id)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    return context, context.new_page()


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("LONGVIE_TEST_ARTEFACTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#generate")
    page.wait_for_function("document.querySelector('#runs') !== null")


def set_number(page, elem_id: str, value) -> None:
    field = page.locator(f"#{elem_id} input")
    field.fill(str(value))
    field.press("Tab")


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def wait_text(page, elem_id: str, needle: str, timeout: float = 60_000) -> None:
    page.wait_for_function("([id, needle]) => { const e = document.querySelector('#' + id);"
                           " return e && e.innerText.includes(needle); }", arg=[elem_id, needle], timeout=timeout)


def video_state(page, selector: str) -> dict | None:
    return page.evaluate(
        """(sel) => { const v = document.querySelector(sel);
                      return v ? {readyState: v.readyState, duration: v.duration, error: v.error && v.error.code,
                                  width: v.videoWidth, height: v.videoHeight} : null; }""", selector)


def preview_src(page) -> str | None:
    return page.evaluate("() => { const i = document.querySelector('#preview img'); return i ? i.src : null; }")


def upload(page, elem_id: str, files) -> None:
    page.locator(f"#{elem_id} input[type=file]").first.set_input_files([str(f) for f in files])


def fill_tiny_settings(page) -> None:
    for elem_id, value in (("steps", STEPS), ("height", HEIGHT), ("width", WIDTH), ("num-frames", FRAMES)):
        set_number(page, elem_id, value)


def test_pairing_reload_sessions_previews_and_messages(server, browser, example, artefacts):
    """One tiny 3-clip run, watched by its owner through a reload and poked by a second session."""
    context_a, a = visitor(browser)
    context_b, b = visitor(browser)
    try:
        open_page(a, server["url"])
        open_page(b, server["url"])
        assert a.locator("#runs input").input_value() == ""  # a fresh page selects no run
        upload(a, "first-frame", [example / "first.png"])
        renamed = example / "renamed"
        # Tracks first alone, then all in shuffled order: the second upload replaces the first.
        upload(a, "track-files", [renamed / "scene_track0.mp4"])
        wait_text(a, "pairing", "scene_track0.mp4")
        upload(a, "track-files", [renamed / f"scene_track{i}.mp4" for i in (1, 2, 0)])
        upload(a, "depth-files", [renamed / f"scene-depth-{i}.mp4" for i in (2, 0, 1)])
        wait_text(a, "controls-info", "3 clip(s) from uploads")
        rows = a.locator("#pairing tr[id^=pair-]")
        assert rows.count() == 3  # replaced, not appended
        for index in range(3):
            row = rows.nth(index).inner_text()
            assert f"scene-depth-{index}.mp4" in row and f"scene_track{index}.mp4" in row, row
        assert "by file numbers" in text_of(a, "pairing")

        # Frames per clip below the videos' length: the pairing says each control is cut, and how.
        set_number(a, "num-frames", 5)
        wait_text(a, "pairing", "cut: its first 5 of 9 frames are used")
        fill_tiny_settings(a)
        wait_text(a, "pairing", "as is")

        # Empty prompts: the error is shown next to the prompt table, as an error, and stays.
        a.locator("#generate").click()
        wait_text(a, "prompts-error", "empty prompt")
        assert a.locator("#prompts-error .lv-error").count() == 1
        assert "Traceback" not in text_of(a, "message") and "/tmp" not in text_of(a, "prompts-error")
        time.sleep(1.0)
        assert "empty prompt" in text_of(a, "prompts-error") and "Prompts" in text_of(a, "message")
        a.screenshot(path=str(artefacts / "bad_input.png"), full_page=True)

        # A cond.json of 4 prompts for 3 clips of controls: the table keeps 3 rows.
        upload(a, "cond-file", [example / "cond.json"])
        wait_text(a, "prompts", "checkered plaza")
        texts = json.loads((example / "cond.json").read_text())
        assert a.locator("#prompts [role=row]").count() == 1 + 3  # the header and one row per clip

        a.locator("#generate").click()
        wait_text(a, "message", "queued")
        a.wait_for_function("new URL(window.location.href).searchParams.get('run')")
        run_name = a.evaluate("new URL(window.location.href).searchParams.get('run')")
        run_dir = server["outputs"] / run_name

        # The live preview changes during clip 0 (a new estimate every step).
        wait_text(a, "status", "Clip 0 (1 of 3) · step")
        a.wait_for_function("() => { const i = document.querySelector('#preview img'); return i && i.src; }")
        first_preview = preview_src(a)
        a.wait_for_function("(first) => { const i = document.querySelector('#preview img');"
                            " return i && i.src && i.src !== first && document.querySelector('#status')"
                            ".innerText.includes('Clip 0 ('); }", arg=first_preview, timeout=30_000)

        a.evaluate("window.scrollTo(0, 0)")
        a.screenshot(path=str(artefacts / "generating.png"), full_page=True)  # docs/app.png

        # A second browser session, while A's job runs: its Cancel does nothing to A's job.
        b.locator("#cancel").click()
        wait_text(b, "message", "no job of yours")

        # A reloads during generation: the page comes back to the run (its id is in the URL).
        a.reload()
        a.wait_for_selector("#generate")
        wait_text(a, "status", "· step")
        assert "cancel" not in text_of(a, "status").lower()
        assert a.locator("#steps input").input_value() == str(STEPS)  # the run's settings are back
        a.wait_for_selector("#clip-0-generated video", timeout=60_000)
        a.screenshot(path=str(artefacts / "first_clip.png"), full_page=True)
        a.wait_for_function("(() => { const v = document.querySelector('#final-video video');"
                            "         return v && v.readyState >= 1 && v.duration > 0; })()", timeout=90_000)
        final = video_state(a, "#final-video video")
        assert final["error"] is None and (final["width"], final["height"]) == (WIDTH, HEIGHT)
        assert abs(final["duration"] - (3 * FRAMES - 2) / 16) < 0.15  # 25 stitched frames at 16 fps
        wait_text(a, "message", "Finished: 25 frames from 3 clip(s)")
        time.sleep(1.0)  # the message stays (no handler wipes it)
        assert "Finished: 25 frames from 3 clip(s)" in text_of(a, "message")
        for index in range(3):
            for kind in ("depth", "tracks", "generated"):
                a.wait_for_function(f"(() => {{ const v = document.querySelector('#clip-{index}-{kind} video');"
                                    " return v && v.readyState >= 1; })()", timeout=15_000)
                state = video_state(a, f"#clip-{index}-{kind} video")
                assert state["error"] is None, (index, kind, state)
        a.evaluate("window.scrollTo(0, 0)")
        a.screenshot(path=str(artefacts / "finished.png"), full_page=True)

        # The run got each control on the right clip (by content), and B never stopped it.
        cond = json.loads((run_dir / "inputs" / "cond.json").read_text())
        assert [entry["depth"] for entry in cond] == ["depth_00.mp4", "depth_01.mp4", "depth_02.mp4"]
        for index in range(3):
            for kind in ("depth", "track"):
                assert sha(run_dir / "inputs" / f"{kind}_0{index}.mp4") == sha(example / f"{kind}_0{index}.mp4")
        assert [entry["text"] for entry in cond] == [t["text"] for t in texts[:3]]
        log = (run_dir / "run.log").read_text()
        assert "clip 2 done (3 of 3)" in log and "cancelled" not in log
        assert (run_dir / "video.mp4").is_file()

        # B can neither open A's run by its URL nor find it in its list of runs; A's list has it.
        open_page(b, server["url"] + f"?run={run_name}")
        wait_text(b, "message", f"Run {run_name}: not found")
        assert "Clip" not in text_of(b, "status") and b.locator("#clip-0").count() == 0
        for page, listed in ((a, True), (b, False)):
            page.locator("#refresh").click()
            time.sleep(0.5)
            page.locator("#runs input").click()
            options = page.locator("[role=listbox] [role=option]").all_inner_texts()
            assert any(run_name in option for option in options) == listed, options
            page.keyboard.press("Escape")

        # The owner's explicit Cancel stops its job: redo the last clip of the run, cancel it.
        assert run_name in a.locator("#runs input").input_value()  # selected when it finished
        set_number(a, "redo-clip", 2)
        a.locator("#redo").click()
        wait_text(a, "status", "Clip 2 (3 of 3) · step 1/")
        a.locator("#cancel").click()
        wait_text(a, "message", "Cancelled after the current step")
        time.sleep(1.0)
        assert "Cancelled after the current step" in text_of(a, "message")
        assert "cancelled from the page during clip 2" in (run_dir / "run.log").read_text()
    finally:
        context_a.close()
        context_b.close()
    assert server["process"].poll() is None  # the server kept running through everything


def test_camera_tab_preview_then_generate(server, browser, artefacts, tmp_path_factory):
    """The Camera tab (issue 22 point 6): a bad request is marked at its field; the synthetic example's photo
    and its depth map, Preview path shows the path plot and the preview video, Generate makes the run (listed
    like any other, its controls and camera.json in inputs/)."""
    from longvie.camera.example import SYNTHETIC_FOV_DEG, write_synthetic_photo

    photo, depth = write_synthetic_photo(tmp_path_factory.mktemp("camera_photo") / "example", 2 * HEIGHT, 2 * WIDTH)
    context, page = visitor(browser)
    try:
        open_page(page, server["url"])
        page.get_by_role("tab", name="Camera").click()
        page.locator("#camera-preview-button").click()  # no photo, no prompt: each error at its field
        wait_text(page, "camera-photo-error", "Photo: missing")
        wait_text(page, "camera-prompt-error", "Prompt: none for every clip")
        assert "Cannot preview the path" in text_of(page, "message")

        upload(page, "camera-photo", [photo])
        upload(page, "camera-depth", [depth])
        page.locator("#camera-fov input").fill(str(SYNTHETIC_FOV_DEG))
        page.locator("#camera-path input").click()
        page.get_by_role("option", name="orbit_left", exact=True).click()
        set_number(page, "camera-angle", 20)
        page.locator("#camera-prompt textarea").fill("The camera circles left across a sunlit checkered plaza.")
        for elem_id, value in (("steps", 1), ("height", HEIGHT), ("width", WIDTH), ("num-frames", FRAMES)):
            set_number(page, elem_id, value)
        set_number(page, "camera-clips", 2)
        wait_text(page, "camera-length", "2 clip(s) of 9 frames = 17 frames")
        page.get_by_text("Per-clip prompts").click()  # the table follows the clips: a header and 2 rows
        page.wait_for_function("() => document.querySelectorAll('#camera-prompts [role=row]').length === 3")

        page.locator("#camera-preview-button").click()
        page.wait_for_function("() => { const i = document.querySelector('#camera-path-plot img');"
                               " return i && i.complete && i.naturalWidth > 0; }")
        page.wait_for_function("() => { const v = document.querySelector('#camera-preview-video video');"
                               " return v && v.readyState >= 1 && v.duration > 0; }")
        preview = video_state(page, "#camera-preview-video video")
        assert preview["error"] is None and preview["width"] == 3 * WIDTH  # photo | depth | tracks, side by side
        assert page.locator("#camera-photo-error .lv-error").count() == 0  # the errors went with the next action
        wait_text(page, "message", "Path rendered: 2 clip(s)")

        page.locator("#camera-generate").click()
        wait_text(page, "message", "The previewed controls are used")
        page.wait_for_function("new URL(window.location.href).searchParams.get('run')")
        run_dir = server["outputs"] / page.evaluate("new URL(window.location.href).searchParams.get('run')")
        page.wait_for_function("(() => { const v = document.querySelector('#final-video video');"
                               "         return v && v.readyState >= 1 && v.duration > 0; })()", timeout=90_000)
        final = video_state(page, "#final-video video")
        assert final["error"] is None and (final["width"], final["height"]) == (WIDTH, HEIGHT)
        assert abs(final["duration"] - (2 * FRAMES - 1) / 16) < 0.15
        wait_text(page, "message", "Finished: 17 frames from 2 clip(s)")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(artefacts / "camera.png"), full_page=True)  # docs/app_camera.png
        cond = json.loads((run_dir / "inputs" / "cond.json").read_text())
        assert [c["text"] for c in cond] == ["The camera circles left across a sunlit checkered plaza."] * 2
        camera = json.loads((run_dir / "inputs" / "camera.json").read_text())
        assert camera["path"]["preset"] == "orbit_left" and camera["frames"] == 17
        assert "clip 1 done (2 of 2)" in (run_dir / "run.log").read_text()
    finally:
        context.close()
    assert server["process"].poll() is None
