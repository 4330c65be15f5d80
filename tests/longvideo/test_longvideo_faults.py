"""Fault injection on long-video runs (CPU, tiny preset): kills, Ctrl-C, a full disk, damaged run
files, the run-lock race, NaN output, and every class of bad setting failing before a model loads.

Kills are real (SIGKILL / SIGINT sent by the child process to itself at a chosen write of the run),
so what is on disk afterwards is exactly what an interrupted run leaves; resuming must then give
the same bytes as an uninterrupted run.
"""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from longvie.longvideo.run_state import RunDir, RunLockedError

REPO = Path(__file__).resolve().parents[2]
FRAMES, HEIGHT, WIDTH = 9, 32, 48


def run_files(run_dir: Path) -> dict:
    """Bytes of everything a run produced except the manifest and log (which hold timings)."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "run.log")}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny-preset cache (checkpoints written once) and a 2-clip synthetic example."""
    from longvie.examples.synthetic import make_synthetic_example
    from longvie.presets.tiny import write_tiny_checkpoints

    root = tmp_path_factory.mktemp("faults")
    cache = root / "cache"
    write_tiny_checkpoints(cache / "tiny_checkpoints")
    cond = make_synthetic_example(root / "example", clips=2, height=HEIGHT, width=WIDTH, frames_per_clip=FRAMES,
                                  reference=False)
    return {"root": root, "cache": cache, "cond": cond}


def cli_args(env, out: Path, *extra: str) -> list[str]:
    return ["--preset", "tiny", "--cond", str(env["cond"]), "--out", str(out), "--height", str(HEIGHT),
            "--width", str(WIDTH), "--steps", "2", "--no-progress", *extra]


def run_cli(env, monkeypatch, args) -> int:
    from longvie.longvideo.cli import main

    monkeypatch.setenv("LONGVIE_CACHE", str(env["cache"]))
    return main(args)


@pytest.fixture(scope="module")
def reference(env):
    """An uninterrupted 2-clip run."""
    out = env["root"] / "reference"
    with pytest.MonkeyPatch.context() as patch:
        assert run_cli(env, patch, cli_args(env, out)) == 0
    return out


# --------------------------------------------------------------------------------------------------
# SIGKILL / SIGINT at several points, then resume
# --------------------------------------------------------------------------------------------------

# The child patches one RunDir method to send a signal to itself at its N-th call, then runs the CLI.
CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)  # as conftest does in the test process: bit-identical results need the same
    from longvie.longvideo.run_state import RunDir
    method, nth, sig = sys.argv[1], int(sys.argv[2]), getattr(signal, sys.argv[3])
    original = getattr(RunDir, method)
    calls = {"n": 0}
    def patched(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), sig)
            import time; time.sleep(5)  # SIGINT: raised here as KeyboardInterrupt
        return original(self, *args, **kwargs)
    setattr(RunDir, method, patched)
    from longvie.longvideo.cli import main
    sys.exit(main(sys.argv[4:]))
""")

# (method, call number, signal): state of clip 0 written but not its mp4; clip 0 fully written but
# not committed (the 2nd manifest write commits clip 0); clip 0 committed, Ctrl-C while clip 1's
# state is being written. (Each child costs a Python start with torch + diffusers: keep it to three.)
KILL_POINTS = [("write_clip_video", 1, "SIGKILL"), ("save_manifest", 2, "SIGKILL"),
               ("save_clip_state", 2, "SIGINT")]


@pytest.mark.parametrize("method, nth, sig", KILL_POINTS, ids=[f"{m}{n}-{s}" for m, n, s in KILL_POINTS])
def test_kill_then_resume_is_bit_identical(env, reference, tmp_path, monkeypatch, method, nth, sig):
    out = tmp_path / "run"
    child = subprocess.run([sys.executable, "-c", CHILD, method, str(nth), sig, *cli_args(env, out)],
                           capture_output=True, text=True, timeout=300, cwd=REPO,
                           env={**os.environ, "LONGVIE_CACHE": str(env["cache"]), "PYTHONPATH": str(REPO)})
    if sig == "SIGKILL":
        assert child.returncode == -signal.SIGKILL, child.stderr
    else:
        assert child.returncode == 130, child.stderr
        assert "interrupted after clip 0; run the same command to continue" in child.stderr
        assert "Traceback" not in child.stderr
    assert not (out / "run.lock").exists() or sig == "SIGKILL"  # a killed holder leaves a free lock file
    assert run_cli(env, monkeypatch, cli_args(env, out)) == 0
    assert run_files(out) == run_files(reference)
    json.loads((out / "manifest.json").read_text())


# --------------------------------------------------------------------------------------------------
# Full disk, damaged run files
# --------------------------------------------------------------------------------------------------


def test_full_disk_mid_run_then_resume(env, reference, tmp_path, monkeypatch, capsys):
    from longvie.longvideo import run_state

    out = tmp_path / "run"
    real_write = run_state.atomic_write_bytes

    def full_disk(path, data):
        if Path(path).name == "clip_001.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data)

    monkeypatch.setattr(run_state, "atomic_write_bytes", full_disk)
    assert run_cli(env, monkeypatch, cli_args(env, out)) == 1
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "clip_001.safetensors" in err
    assert "clips 0..0 are finished" in err and "Traceback" not in err
    monkeypatch.setattr(run_state, "atomic_write_bytes", real_write)
    assert run_cli(env, monkeypatch, cli_args(env, out)) == 0
    assert run_files(out) == run_files(reference)


@pytest.mark.parametrize("content, message", [
    ('{"format": "longvie-run/1", "clips": [', "is not valid JSON"),
    ('{"format": "something-else"}', "is not a LongVie run manifest"),
    ('[1, 2, 3]', "is not a LongVie run manifest"),
    ('{"format": "longvie-run/1"}', "lacks its 'clips' list"),
])
def test_corrupt_or_foreign_manifest_is_reported(env, tmp_path, monkeypatch, capsys, content, message):
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text(content)
    assert run_cli(env, monkeypatch, cli_args(env, out)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert (out / "manifest.json").read_text() == content  # left as it was


def test_corrupt_state_file_is_regenerated(env, reference, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    state = out / "state" / "clip_001.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    (out / "video.mp4").unlink()
    assert run_cli(env, monkeypatch, cli_args(env, out)) == 0
    assert run_files(out) == run_files(reference)


def test_manifest_never_holds_nan(tmp_path):
    run = RunDir(tmp_path)
    run.save_manifest({"format": "longvie-run/1", "clips": [], "settings": {}, "seconds_total": 1.0})
    before = run.manifest_path.read_bytes()
    with pytest.raises(ValueError):
        run.save_manifest({"format": "longvie-run/1", "clips": [], "settings": {}, "seconds_total": float("nan")})
    assert run.manifest_path.read_bytes() == before


def test_nonfinite_clip_is_not_written(env, tmp_path):
    """Absurd guidance overflows the tiny model's latents to inf/NaN: nothing of the clip is written."""
    import torch

    from longvie.longvideo.sampler import LongVideoSampler, LongVideoSettings, NonFiniteOutputError
    from longvie.longvideo.validation import load_conditions
    from longvie.presets.tiny import write_tiny_checkpoints
    from longvie.sampling.pipeline import LongViePipeline

    pipe = LongViePipeline.from_pretrained(*write_tiny_checkpoints(env["cache"] / "tiny_checkpoints"),
                                           torch_dtype=torch.float32, device="cpu")
    settings = LongVideoSettings(num_frames=FRAMES, height=HEIGHT, width=WIDTH, steps=2, cfg=1e38, model="tiny",
                                 dtype="float32")
    clips = load_conditions(env["cond"])[0]
    with pytest.raises(NonFiniteOutputError, match="clip 0: its final latents contain NaN or infinite"):
        LongVideoSampler(settings, pipe=pipe, progress=False)(tmp_path / "run", env["cond"].parent / "first.png",
                                                              clips)
    assert not (tmp_path / "run" / "state" / "clip_000.safetensors").exists()
    assert not (tmp_path / "run" / "clips" / "clip_000.mp4").exists()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(),
                          parse_constant=lambda c: pytest.fail(f"manifest holds {c}"))
    assert manifest["clips"][0]["status"] == "pending"


# --------------------------------------------------------------------------------------------------
# The run lock
# --------------------------------------------------------------------------------------------------


def _racer(run_dir: str, rounds: int, barrier, results) -> None:
    rng = random.Random(os.getpid())
    acquired = violations = 0
    for round_index in range(rounds):
        barrier.wait()
        try:
            with RunDir(run_dir).lock():
                try:
                    fd = os.open(os.path.join(run_dir, f"holder-{round_index}"), os.O_CREAT | os.O_EXCL)
                except FileExistsError:
                    violations += 1  # somebody else holds the lock at the same time
                else:
                    os.close(fd)
                    time.sleep(rng.random() * 0.002)
                    os.unlink(os.path.join(run_dir, f"holder-{round_index}"))
                    acquired += 1
        except RunLockedError:
            pass
        barrier.wait()
    results.put((acquired, violations))


def test_lock_race_never_two_holders(tmp_path):
    processes, rounds = 8, 40
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_racer, args=(str(tmp_path), rounds, barrier, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    outcome = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert sum(v for _, v in outcome) == 0
    assert 1 <= sum(a for a, _ in outcome) <= rounds * processes
    assert not (tmp_path / "run.lock").exists()


def test_lock_of_killed_holder_is_taken_over_and_live_one_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from longvie.longvideo.run_state import RunDir
        with RunDir({str(tmp_path)!r}).lock():
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
            with RunDir(tmp_path).lock():
                pass
        assert (tmp_path / "run.lock").read_text().strip() == str(holder.pid)  # the refused one removed nothing
    finally:
        holder.kill()
        holder.wait()
    with RunDir(tmp_path).lock():  # the killed holder's lock file is still there, but free
        assert (tmp_path / "run.lock").read_text().strip() == str(os.getpid())
    assert not (tmp_path / "run.lock").exists()


# --------------------------------------------------------------------------------------------------
# Bad settings: every class fails before any model loads
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def no_model(monkeypatch):
    """A spy on the loaders: a test fails if any model is loaded."""
    from longvie.longvideo import cli
    from longvie.sampling.pipeline import LongViePipeline

    calls = []

    def spy_loader(config, device, *parallel_degrees):
        def load():
            calls.append("pipeline_loader")
            raise AssertionError("a model was loaded")
        return load

    monkeypatch.setattr(cli, "pipeline_loader", spy_loader)
    monkeypatch.setattr(LongViePipeline, "from_pretrained",
                        classmethod(lambda cls, *a, **k: calls.append("from_pretrained")))
    return calls


def _bad_weights_config(env, tmp_path) -> list[str]:
    """A config pointing at tiny checkpoints whose control.safetensors has a tensor of the wrong shape."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from longvie.presets.tiny import write_tiny_checkpoints

    base, longvie = write_tiny_checkpoints(env["cache"] / "tiny_checkpoints")
    bad = tmp_path / "LongVie2-bad"
    shutil.copytree(longvie, bad)
    tensors = load_file(bad / "control.safetensors")
    name = next(k for k, v in tensors.items() if v.ndim == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0] + 2, tensors[name].shape[1])
    save_file(tensors, bad / "control.safetensors")
    config = tmp_path / "custom.yaml"
    config.write_text(f"preset: custom\nbase_model_dir: {base}\nlongvie_dir: {bad}\ndtype: float32\noffload: none\n")
    return ["--config", str(config)], name


BAD_SETTINGS = {
    "steps": (["--steps", "0"], "steps=0"),
    "cfg": (["--cfg", "nan"], "cfg=nan"),
    "shift": (["--shift", "-1"], "shift=-1"),
    "seed-negative": (["--seed", "-1"], "seed=-1"),
    "seed-huge": (["--seed", str(2**64)], "seed=18446744073709551616"),
    "frames": (["--num-frames", "10"], "num_frames=10"),
    "size": (["--height", "33"], "height=33"),
    "memory": (["--height", "4096", "--width", "4096", "--num-frames", "1001"], "of activations"),
    "device": (["--device", "cuda:7"], "--device cuda:7"),
    "device-name": (["--device", "gpu0"], "--device 'gpu0'"),
    "redo-new-run": (["--redo", "0"], "holds no run yet"),
    "placeholder": ([], "placeholder prompt"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_setting_fails_before_any_model_loads(env, tmp_path, monkeypatch, capsys, no_model, case):
    extra, expected = BAD_SETTINGS[case]
    out = tmp_path / "run"
    cond = env["cond"]
    if case == "placeholder":
        entries = json.loads(cond.read_text())
        entries[1]["text"] = "PLACEHOLDER for clip 1: replace this text with a description of the clip"
        cond = cond.parent / "cond_placeholder.json"
        cond.write_text(json.dumps(entries))
    if case == "memory":
        monkeypatch.setattr("longvie.longvideo.preflight._device_memory", lambda device: 2 * 2**30)
    args = cli_args({**env, "cond": cond}, out, *extra)
    assert run_cli(env, monkeypatch, args) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
    assert no_model == []
    if case == "placeholder":  # accepted when asked for (the model then loads: the spy says so)
        assert run_cli(env, monkeypatch, [*args, "--allow-placeholder-prompts"]) == 1
        assert no_model == ["pipeline_loader"]


def test_config_file_problems_name_file_and_line(env, tmp_path, monkeypatch, capsys, no_model):
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("preset: tiny\nsampling:\n  steps: 2\n   cfg: 1\n")
    assert run_cli(env, monkeypatch, [*cli_args(env, tmp_path / "a"), "--config", str(syntax)]) == 2
    assert f"{syntax}:4: YAML syntax error" in capsys.readouterr().err
    schema = tmp_path / "schema.yaml"
    schema.write_text("preset: tiny\nsampling:\n  steps: two\n  cfgg: 1\noffload: all\n")
    assert run_cli(env, monkeypatch, [*cli_args(env, tmp_path / "b"), "--config", str(schema)]) == 2
    err = capsys.readouterr().err
    assert f"{schema}:3: 'sampling.steps' must be int" in err and f"{schema}:4: unknown key 'sampling.cfgg'" in err
    assert f"{schema}:5: offload 'all'" in err and no_model == []


def test_output_folder_problems(env, tmp_path, monkeypatch, capsys, no_model):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, expected in ((a_file, "is a file, not a folder"), (a_file / "run", "is a file, so the folder")):
        assert run_cli(env, monkeypatch, cli_args(env, out)) == 2
        assert expected in capsys.readouterr().err
    monkeypatch.setattr("longvie.longvideo.preflight.shutil.disk_usage",
                        lambda path: type("Usage", (), {"free": 1000})())
    assert run_cli(env, monkeypatch, cli_args(env, tmp_path / "run")) == 2
    assert "free — free space or choose another --out" in capsys.readouterr().err
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        assert run_cli(env, monkeypatch, cli_args(env, locked / "run")) == 2
        assert "is not writable" in capsys.readouterr().err
    assert no_model == []


def test_weight_headers_checked_against_base_config(env, tmp_path, monkeypatch, capsys, no_model):
    config_args, name = _bad_weights_config(env, tmp_path)
    assert run_cli(env, monkeypatch, [*cli_args(env, tmp_path / "run"), *config_args]) == 2
    err = capsys.readouterr().err
    assert "control.safetensors: 1 tensor shape(s) differ" in err and name in err
    assert no_model == []


def test_all_problems_reported_at_once(env, tmp_path, monkeypatch, capsys, no_model):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    args = cli_args(env, a_file, "--steps", "0", "--cfg", "inf", "--device", "cuda:9")
    assert run_cli(env, monkeypatch, args) == 2
    err = capsys.readouterr().err
    assert "4 problem(s)" in err, err


def test_unexpected_error_prints_one_line_with_the_log(env, tmp_path, monkeypatch, capsys):
    from longvie.longvideo import cli

    def broken(config, device, *parallel_degrees):
        def load():
            raise ZeroDivisionError("boom")
        return load

    monkeypatch.setattr(cli, "pipeline_loader", broken)
    out = tmp_path / "run"
    assert run_cli(env, monkeypatch, cli_args(env, out)) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "unexpected ZeroDivisionError: boom" in errors[0] and str(out / "run.log") in errors[0]
    assert "Traceback" in (out / "run.log").read_text()


def test_out_of_memory_suggests_memory_modes(env, tmp_path, monkeypatch, capsys):
    import torch

    from longvie.longvideo import cli

    def oom(config, device, *parallel_degrees):
        def load():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return load

    monkeypatch.setattr(cli, "pipeline_loader", oom)
    assert run_cli(env, monkeypatch, cli_args(env, tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert "--offload model" in err and "--offload group" in err and "Traceback" not in err
