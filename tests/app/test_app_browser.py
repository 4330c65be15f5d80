"""The page in a real browser: headless Debian Chromium driven by playwright (``executable_path``;
no browser download), against ``python -m longvie.app --preset tiny`` on a free local port.

Uploads the synthetic example, tries a bad prompt table (message in the page), runs 2 tiny clips,
checks that clip 0's video appears while clip 1 is still being generated and that the stitched
video plays. Screenshots go to ``$LONGVIE_TEST_ARTEFACTS`` (default: the test's tmp folder).
Skips when playwright or Chromium (``$LONGVIE_CHROMIUM``, default /usr/bin/chromium) is missing.
"""
from __future__ import annotations

import os
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
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HEIGHT, WIDTH, FRAMES, STEPS = 32, 48, 9, 2
STEP_DELAY = 0.75  # seconds per denoising step: clip 1 takes >= 1.5 s after clip 0 is written

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    from longvie.examples.synthetic import make_synthetic_example

    cond = make_synthetic_example(tmp_path_factory.mktemp("example"), clips=2, height=HEIGHT, width=WIDTH,
                                  frames_per_clip=FRAMES, reference=False)
    return cond.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on 127.0.0.1:<free port>, tiny preset, its own cache and output folders."""
    root = tmp_path_factory.mktemp("app")
    port = free_port()
    env = {**os.environ, "LONGVIE_CACHE": str(root / "cache"), "GRADIO_ANALYTICS_ENABLED": "False",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "longvie.app", "--preset", "tiny", "--port", str(port), "--outputs",
         str(root / "outputs"), "--step-delay", str(STEP_DELAY)], cwd=REPO, env=env, stdout=log,
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
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
                pytest.fail(f"the app did not answer within 90 s:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": url, "process": process, "outputs": root / "outputs", "log": root / "server.log"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def page(tmp_path):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            yield context.new_page()
        finally:
            context.close()


@pytest.fixture
def artefacts(tmp_path) -> Path:
    folder = Path(os.environ.get("LONGVIE_TEST_ARTEFACTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def set_number(page, elem_id: str, value) -> None:
    field = page.locator(f"#{elem_id} input")
    field.fill(str(value))
    field.press("Tab")


def video_state(page, selector: str) -> dict | None:
    return page.evaluate(
        """(sel) => { const v = document.querySelector(sel);
                      return v ? {readyState: v.readyState, duration: v.duration, error: v.error && v.error.code,
                                  width: v.videoWidth, height: v.videoHeight} : null; }""", selector)


def test_page_generates_two_clips_with_previews(server, page, example, artefacts):
    page.goto(server["url"])
    page.wait_for_selector("#generate", timeout=30_000)
    page.locator("#first-frame input[type=file]").set_input_files(str(example / "first.png"))
    page.locator("#depth-files input[type=file]").set_input_files([str(example / f"depth_0{i}.mp4") for i in range(2)])
    page.locator("#track-files input[type=file]").set_input_files([str(example / f"track_0{i}.mp4") for i in range(2)])
    page.wait_for_function("document.querySelector('#controls-info').innerText.includes('2 clip(s) from uploads')",
                           timeout=15_000)

    # A bad input: the prompt table still has empty prompts -> a message in the page, no traceback.
    page.locator("#generate").click()
    page.wait_for_function("document.querySelector('#message').innerText.includes('empty prompt')", timeout=15_000)
    message = page.locator("#message").inner_text()
    assert "row 1 (clip 0): empty prompt" in message and "Traceback" not in message
    page.screenshot(path=str(artefacts / "bad_input.png"), full_page=True)

    # The example's prompts from its cond.json, tiny settings, generate.
    page.locator("#cond-file input[type=file]").set_input_files(str(example / "cond.json"))
    page.wait_for_function("document.querySelector('#prompts').innerText.includes('checkered plaza')", timeout=15_000)
    for elem_id, value in (("steps", STEPS), ("height", HEIGHT), ("width", WIDTH), ("num-frames", FRAMES)):
        set_number(page, elem_id, value)
    started = time.monotonic()
    page.locator("#generate").click()

    page.wait_for_function("/Clip 1\\/2 · step \\d\\/2/.test(document.querySelector('#status').innerText)",
                           timeout=60_000)  # per-step progress
    page.wait_for_selector("#clip-0-generated video", timeout=60_000)
    first_clip_at = time.monotonic() - started
    # clip 0 is on the page while clip 1 is still being generated
    assert page.locator("#clip-1-generated video").count() == 0
    assert page.locator("#final-video video").count() == 0
    page.screenshot(path=str(artefacts / "first_clip.png"), full_page=True)

    page.wait_for_function(
        "(() => { const v = document.querySelector('#final-video video');"
        "         return v && v.readyState >= 1 && v.duration > 0; })()", timeout=60_000)
    done_at = time.monotonic() - started
    assert done_at - first_clip_at >= STEPS * STEP_DELAY * 0.9  # clip 1 really was still running
    final = video_state(page, "#final-video video")
    assert final["error"] is None and (final["width"], final["height"]) == (WIDTH, HEIGHT)
    assert abs(final["duration"] - (2 * FRAMES - 1) / 16) < 0.15  # 17 stitched frames at 16 fps
    page.wait_for_function(
        "(() => { const v = document.querySelector('#clip-1-generated video'); return v && v.readyState >= 1; })()",
        timeout=15_000)
    for index in range(2):
        for kind in ("depth", "tracks", "generated"):
            state = video_state(page, f"#clip-{index}-{kind} video")
            assert state is not None and state["error"] is None, (index, kind, state)
    assert "Finished: 17 frames from 2 clip(s)" in page.locator("#status").inner_text()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artefacts / "finished.png"), full_page=True)  # docs/app.png, scaled down

    [run] = [p for p in server["outputs"].iterdir() if (p / "manifest.json").is_file()]
    assert (run / "clips" / "clip_001.mp4").is_file() and (run / "video.mp4").is_file()
    assert server["process"].poll() is None  # the server kept running through the bad input
