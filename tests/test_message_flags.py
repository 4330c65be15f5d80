"""Every `--flag` that a message names exists in the command that prints the message (issue 19, item 5:
a message once suggested `--depth-npy` to a command without it).

The flags of each command are read from its real argparse parser (captured when the command parses
its arguments, without running it) and from the shell scripts' own `case` options. Messages are every
string in the package, utils/, scripts/ and download_wan2.1.py except docstrings (user-facing text:
errors, warnings, hints, help), and the echo/fail strings of the shell scripts. Each source file is
mapped to the commands that can print its messages; a module shared by several commands (the depth
estimators, the driving-video options) must name only flags that all of them have.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import fnmatch
import importlib
import importlib.util
import io
import re
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w(-])--[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")  # not CSS "var(--name)"

# Flags of tools we hand over to or quote in a hint, not ours: torchrun (launch lines in messages and
# help), accelerate's launcher, pip (install advice), the Hugging Face CLI (hand-download advice).
EXTERNAL_FLAGS = {
    "--nproc_per_node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--standalone", "--master_port",  # torchrun
    "--config_file",  # accelerate launch
    "--force-reinstall", "--no-build-isolation", "--index-url", "--extra-index-url", "--no-deps",  # pip
    "--include", "--local-dir",  # hf download
    "--query-gpu", "--format",  # nvidia-smi (the GPU check's device line)
}


class _Captured(BaseException):
    """Raised instead of parsing, to stop a command right after it built its parser."""


def _load_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"_flags_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _module(name: str):
    return importlib.import_module(name)


# command -> how to make it build its parser (any call that reaches parse_args / parse_known_args).
COMMANDS = {
    "sample": lambda: _module("longvie.longvideo.cli").main([]),
    "batch": lambda: _module("longvie.longvideo.batch").main([]),
    "train": lambda: _module("longvie.train.__main__").main([]),
    "train-cache": lambda: _module("longvie.train.cache").main([]),
    "train-metadata": lambda: _module("longvie.train.metadata").main([]),
    "eval": lambda: _module("longvie.eval.cli").main([]),
    "eval-bench": lambda: _module("longvie.eval.bench").main([]),
    "make-bench": lambda: _module("longvie.eval.make_bench").main([]),
    "app": lambda: _module("longvie.app.__main__").main([]),
    "benchmark": lambda: _module("longvie.benchmark.speed").main([]),
    "amdahl": lambda: _module("longvie.benchmark.amdahl").main([]),
    "gpu-check": lambda: _module("longvie.benchmark.gpu_check").main([]),
    "memory": lambda: _module("longvie.acceleration.memory").main([]),
    "download": lambda: _module("longvie.weights.download").parse_args([]),
    "synthetic": lambda: _module("longvie.examples.synthetic").main([]),
    "output-dir": lambda: _module("longvie.media.output_dir").main([]),
    "camera": lambda: _module("longvie.camera.__main__").main([]),
    "camera-example": lambda: _module("longvie.camera.example").main([]),
    **{name: (lambda name=name: _load_file(REPO / "utils" / f"{name}.py").parse_args([]))
       for name in ("prepare_controls", "get_depth", "get_track", "depth_npy2mp4", "qwen_caption_refine")},
    **{path.stem: (lambda path=path: _run_script(path)) for path in sorted(REPO.glob("scripts/*.py"))},
}


def _run_script(path: Path):
    """scripts/NAME.py: its main() (with no arguments), which builds its parser first, if it has one."""
    main = getattr(_load_file(path), "main", None)
    if main is None:
        return
    import inspect

    return main([]) if inspect.signature(main).parameters else main()


def _shell_case_flags(script: str) -> set[str]:
    """The options a shell script handles itself: the patterns of its `case` arms."""
    text = (REPO / script).read_text()
    flags = set()
    for pattern in re.findall(r"^\s*([-|\w=*]+)\)", text, flags=re.M):
        flags |= {p.rstrip("=*") for p in pattern.split("|") if p.startswith("--")}
    return flags


SHELL_SCRIPTS = {"sample.sh": "sample_longvideo.sh", "train.sh": "train.sh", "gpu_check.sh": "scripts/gpu_check.sh"}
SCRIPTS_WITHOUT_OPTIONS = {path.stem for path in REPO.glob("scripts/*.py") if "argparse" not in path.read_text()}


def _flags_of(command: str) -> set[str]:
    if command in SHELL_SCRIPTS:
        return _shell_case_flags(SHELL_SCRIPTS[command])
    captured = []

    def capture(self, args=None, namespace=None):
        captured.append(self)
        raise _Captured

    with mock.patch.object(argparse.ArgumentParser, "parse_known_args", capture), \
            contextlib.redirect_stdout(io.StringIO()):
        try:
            COMMANDS[command]()
        except _Captured:
            pass
    assert captured or command in SCRIPTS_WITHOUT_OPTIONS, f"{command}: no argparse parser was built"
    flags = {option for parser in captured for option in parser._option_string_actions}
    if command == "benchmark":  # the flags that python -m longvie.benchmark dispatches on by hand
        dispatch = _module("longvie.benchmark.__main__")
        flags |= {value for name, value in vars(dispatch).items() if name.endswith("_FLAG")}
    return flags


def _exists(command: str) -> bool:
    """Whether the command's module is in this checkout (branches land one by one)."""
    modules = {"amdahl": "longvie.benchmark.amdahl", "benchmark": "longvie.benchmark.speed",
               "gpu-check": "longvie.benchmark.gpu_check"}
    return command not in modules or importlib.util.find_spec(modules[command]) is not None


@pytest.fixture(scope="module")
def command_flags() -> dict[str, set[str]]:
    return {name: _flags_of(name) if _exists(name) else set() for name in [*COMMANDS, *SHELL_SCRIPTS]}


# Which commands print the messages of which source files (first match wins). "all": a module shared
# by these commands; each flag it names must exist in every one. "any": the flag must exist in one.
SOURCES = [
    ("longvie/longvideo/batch.py", "any", ["batch", "sample"]),
    ("longvie/longvideo/*.py", "any", ["sample", "sample.sh"]),
    ("longvie/sample.py", "any", ["sample"]),
    ("longvie/sampling/*.py", "any", ["sample"]),
    ("longvie/acceleration/memory.py", "any", ["memory", "benchmark", "sample"]),
    ("longvie/acceleration/*.py", "any", ["sample", "benchmark"]),
    ("longvie/benchmark/gpu_check.py", "any", ["gpu-check", "gpu_check.sh", "benchmark"]),  # + the rows' speed args
    ("longvie/benchmark/*.py", "any", ["benchmark", "memory", "amdahl"]),
    ("longvie/train/cache.py", "any", ["train-cache", "train"]),
    ("longvie/train/metadata.py", "any", ["train-metadata", "prepare_controls"]),
    ("longvie/train/*.py", "any", ["train", "train.sh"]),
    ("longvie/controls/depth_estimators.py", "all", ["get_depth", "prepare_controls"]),
    ("longvie/controls/driving_video.py", "all", ["get_depth", "get_track", "prepare_controls"]),
    ("longvie/controls/track_video.py", "all", ["get_track", "prepare_controls"]),
    ("longvie/controls/point_tracking.py", "all", ["get_track", "prepare_controls"]),
    ("longvie/controls/model_loading.py", "all", ["get_depth", "prepare_controls", "qwen_caption_refine"]),
    ("longvie/controls/*.py", "any", ["prepare_controls", "get_depth", "get_track", "depth_npy2mp4",
                                      "qwen_caption_refine"]),
    ("longvie/eval/camera_adherence.py", "any", ["eval", "camera"]),
    ("longvie/eval/*.py", "any", ["eval", "eval-bench", "make-bench", "sample"]),
    ("longvie/camera/example.py", "any", ["camera-example", "camera"]),
    ("longvie/camera/*.py", "any", ["camera", "sample", "sample.sh"]),
    ("longvie/app/*.py", "any", ["app"]),
    ("longvie/weights/*.py", "any", ["download", "sample"]),
    ("longvie/media/output_dir.py", "any", ["output-dir", "sample"]),
    ("longvie/media/*.py", "any", ["sample"]),
    ("longvie/examples/*.py", "any", ["synthetic"]),
    ("longvie/presets/*.py", "any", ["sample", "train"]),
    ("longvie/models/*.py", "any", ["sample", "train"]),
    ("utils/*.py", "file", []),      # the script itself
    ("scripts/*.py", "file", []),
    ("download_wan2.1.py", "any", ["download"]),
    ("sample_longvideo.sh", "any", ["sample.sh", "sample"]),
    ("train.sh", "any", ["train.sh", "train"]),
    ("scripts/gpu_check.sh", "any", ["gpu_check.sh", "gpu-check", "output-dir"]),
    ("utils/get_depth.sh", "any", ["get_depth", "depth_npy2mp4", "output-dir"]),
    ("utils/get_track.sh", "any", ["get_track", "output-dir"]),
]


# A message that names another command may name that command's flags ("check them with `python
# download_wan2.1.py --check-only --deep`"); the flags are then looked up there too.
MENTIONS = {
    r"download_wan2\.1": "download", r"prepare_controls": "prepare_controls", r"get_depth": "get_depth",
    r"get_track": "get_track", r"depth_npy2mp4": "depth_npy2mp4", r"qwen_caption_refine": "qwen_caption_refine",
    r"longvie\.benchmark": "benchmark", r"longvie\.train\.cache": "train-cache", r"longvie\.eval": "eval",
    r"longvie\.train(?!\.cache)": "train", r"longvie\.sample|sample_longvideo\.sh|the sampler": "sample",
    r"longvie\.app": "app", r"train\.sh": "train.sh", r"longvie\.examples\.synthetic": "synthetic",
    r"longvie\.media\.output_dir": "output-dir", r"longvie\.camera": "camera",
    r"gpu_check": "gpu-check",
}


MATCHING = {"split", "rsplit", "partition", "rpartition", "replace", "startswith", "endswith", "find", "index",
            "count", "removeprefix", "removesuffix"}


def _mentioned(text: str) -> list[str]:
    return [command for pattern, command in MENTIONS.items() if re.search(pattern, text)]


def _python_messages(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string of a Python file except docstrings; an f-string is one message (its
    literal parts joined)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
    for node in ast.walk(tree):  # strings a message is matched against, not printed: "x".split(" — pass --cond")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MATCHING:
            skip |= {id(arg) for arg in node.args if isinstance(arg, ast.Constant)}
        elif isinstance(node, ast.Compare):
            skip |= {id(part) for part in [node.left, *node.comparators] if isinstance(part, ast.Constant)}
    messages = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v for v in node.values if isinstance(v, ast.Constant)]
            skip |= {id(v) for v in parts}
            messages.append((node.lineno, " {} ".join(v.value for v in parts)))
    return messages + [(node.lineno, node.value) for node in ast.walk(tree)
                       if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip]


def _shell_messages(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the double-quoted strings that a shell script prints (echo, fail, USAGE)."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r'(?:echo|fail|USAGE=)\s*"((?:[^"\\]|\\.)*)"', text, flags=re.S):
        found.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


def _sources() -> list[Path]:
    paths = [*REPO.glob("longvie/**/*.py"), *REPO.glob("utils/*.py"), *REPO.glob("scripts/*.py"),
             REPO / "download_wan2.1.py", REPO / "sample_longvideo.sh", REPO / "train.sh", *REPO.glob("utils/*.sh"),
             *REPO.glob("scripts/*.sh")]
    return sorted(p for p in paths if p.is_file())


def _commands_for(rel: str, known: dict[str, set[str]]) -> tuple[str, list[str]]:
    for pattern, mode, commands in SOURCES:
        if fnmatch.fnmatch(rel, pattern):
            if mode == "file" and Path(rel).stem in known:
                return "any", [Path(rel).stem]
            if mode == "file":
                break
            return mode, commands
    return "any", list(known)  # a new package: at least a flag that some command has


def test_every_flag_a_message_names_exists(command_flags):
    wrong = []
    for path in _sources():
        rel = path.relative_to(REPO).as_posix()
        mode, commands = _commands_for(rel, command_flags)
        messages = _shell_messages(path) if path.suffix == ".sh" else _python_messages(path)
        for line, text in messages:
            named = _mentioned(text)
            for flag in set(FLAG.findall(text)) - EXTERNAL_FLAGS:
                have = [flag in command_flags[c] for c in commands]
                if any(flag in command_flags[c] for c in named):
                    continue
                if not (all(have) if mode == "all" else any(have)):
                    missing = [c for c, ok in zip(commands, have) if not ok]
                    wrong.append(f"{rel}:{line}: {flag} is not an option of {', '.join(missing)}")
    assert not wrong, "messages name flags their commands do not have:\n" + "\n".join(sorted(wrong))


def test_the_scan_sees_flags_and_catches_a_wrong_one(command_flags):
    """The checker is live: it reads real parsers, and the old hint (--depth-npy in the depth estimators,
    shown by get_depth.py too) would fail it."""
    assert "--depth-npy" in command_flags["prepare_controls"] and "--depth-npy" not in command_flags["get_depth"]
    assert {"--out", "--cond", "--preset", "--no-vae-tiling"} <= command_flags["sample"]
    assert {"--gpus", "--help"} <= command_flags["sample.sh"] and "--help" in command_flags["train.sh"]
    mode, commands = _commands_for("longvie/controls/depth_estimators.py", command_flags)
    assert mode == "all" and not all("--depth-npy" in command_flags[c] for c in commands)
    assert FLAG.findall("background: var(--background-fill-secondary); pass --depth-npy X") == ["--depth-npy"]
