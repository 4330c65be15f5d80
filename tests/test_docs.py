"""The documentation stays true: every command shown in README.md and docs/*.md uses flags its entry
point has, and every relative link points at a file (and heading) that exists.

Commands are checked in-process: the entry point's ``main`` is called with the documented arguments
and stopped at its first ``parse_args``/``parse_known_args`` call, which hands over the real parser
(so nothing runs, and the parser is the one users get, including dispatch such as
``python -m longvie.benchmark --estimate-memory``). Each documented ``--flag`` must be one of the
parser's option strings (no abbreviations), and fenced commands must also parse (paths are not
opened by the parsers). Shell scripts: options the script handles itself are read from its ``case``
patterns, the rest are checked against the command it forwards them to, and ``VAR=...`` prefixes
must be variables the script reads.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import io
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
# Entry points that hand the arguments they do not know to another entry point.
PASS_THROUGH = {"longvie.longvideo.batch": "longvie.sample", "longvie.eval.make_bench": "utils.prepare_controls"}
# What the shell scripts call, and the arguments they add before the user's.
SHELL_TARGETS = {
    "sample_longvideo.sh": ("longvie.sample", ["--config", "configs/longvie2_i2v_14b.yaml"]),
    "train.sh": ("longvie.train", ["--stage", "1", "--output", "outputs/train/stage1", "--resume"]),
    "gpu_check.sh": ("longvie.benchmark.gpu_check", ["--out", "outputs/gpu_check"]),
}
# Options of a shell script that take no value, and the ones that send the other arguments elsewhere.
SHELL_SWITCHES = {"--help", "--camera", "--render-only", "--prepare-wheels"}
SHELL_ROUTES = {("sample_longvideo.sh", "--camera"): ("longvie.camera", ["--config", "configs/longvie2_i2v_14b.yaml",
                                                                         "--sample"])}
COMMAND_START = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:python3?|bash|torchrun|accelerate)\s")


@dataclass(frozen=True)
class DocCommand:
    page: str
    line: int
    text: str
    fenced: bool  # in a code block: must parse; inline spans may hold placeholders ([--x N], ...)

    def __str__(self):
        return f"{self.page}:{self.line}"


def _strip_fences(text: str) -> str:
    """The page with fenced code blocks blanked (line numbers kept)."""
    out, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            out.append("")
            continue
        out.append("" if fence else line)
    return "\n".join(out)


def collect_commands() -> list[DocCommand]:
    commands = []
    for page in PAGES:
        name = page.relative_to(REPO).as_posix()
        lines = page.read_text(encoding="utf-8").splitlines()
        fence, pending, start = False, "", 0
        for number, line in enumerate(lines, 1):
            if line.lstrip().startswith("```"):
                fence, pending = not fence, ""
                continue
            if fence:
                stripped = line.strip()
                if stripped.startswith("$ "):
                    stripped = stripped[2:]
                if not pending:
                    start = number
                pending += " " + stripped
                if stripped.endswith("\\"):
                    pending = pending[:-1]
                    continue
                try:
                    tokens = shlex.split(pending, comments=True)
                except ValueError:  # an unbalanced quote: not a command line
                    tokens = []
                pending, group = "", []
                for token in [*tokens, "&&"]:
                    if token in ("&&", "||", ";"):
                        text = shlex.join(group)
                        if group and COMMAND_START.match(text + " "):
                            commands.append(DocCommand(name, start, text, True))
                        group = []
                    else:
                        group.append(token)
            else:
                for span in re.findall(r"`([^`]+)`", line):
                    if COMMAND_START.match(span.strip() + " ") and FLAG.search(span):
                        commands.append(DocCommand(name, number, span.strip(), False))
    return commands


COMMANDS = collect_commands()


class _Captured(BaseException):
    """Raised instead of parsing: BaseException, so that no entry point's `except Exception` eats it."""

    def __init__(self, parser: argparse.ArgumentParser, args: list[str], known: bool):
        super().__init__(parser.prog)
        self.parser, self.args, self.known = parser, args, known


def _load_entry(entry: str):
    """A module name (`longvie.sample`, `utils.get_depth`) or a file path (`scripts/x.py`) -> module."""
    if entry.endswith(".py"):
        path = REPO / entry
        assert path.is_file(), f"documented script {entry} does not exist"
        if path.parent.name == "utils":
            return importlib.import_module(f"utils.{path.stem}")
        spec = importlib.util.spec_from_file_location(f"_docs_check_{path.stem.replace('.', '_')}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    try:
        spec = importlib.util.find_spec(entry)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        pytest.skip(f"module {entry} is not in this checkout yet; its documented command is checked once it lands")
    if spec.submodule_search_locations is not None:  # a package: python -m runs its __main__
        entry = f"{entry}.__main__"
    return importlib.import_module(entry)


def capture_parser(entry: str, argv: list[str], monkeypatch) -> _Captured:
    """Run the entry point's main(argv) up to its first parse call; return that parser and its args."""
    module = _load_entry(entry)
    main = getattr(module, "main", None)
    assert callable(main), f"{entry} has no main()"

    def parse_args(self, args=None, namespace=None):
        raise _Captured(self, list(sys.argv[1:] if args is None else args), known=False)

    def parse_known_args(self, args=None, namespace=None):
        raise _Captured(self, list(sys.argv[1:] if args is None else args), known=True)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
        patch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
        patch.setattr(sys, "argv", [entry, *argv])
        try:
            if inspect.signature(main).parameters:
                main(list(argv))
            else:
                main()
        except _Captured as captured:
            return captured
    raise AssertionError(f"{entry}: main() returned without parsing its arguments")


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _parse_for_real(captured: _Captured) -> list[str]:
    """Parse with the real method; returns the arguments left over (parse_known_args) or fails."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            if captured.known:
                _, rest = argparse.ArgumentParser.parse_known_args(captured.parser, captured.args)
                return rest
            argparse.ArgumentParser.parse_args(captured.parser, captured.args)
            return []
        except SystemExit as exit_:
            raise AssertionError(f"{captured.parser.prog} {shlex.join(captured.args)} does not parse: "
                                 f"{stderr.getvalue().strip()}") from exit_


def check_entry(entry: str, argv: list[str], must_parse: bool, monkeypatch, where: str) -> None:
    captured = capture_parser(entry, argv, monkeypatch)
    known = option_strings(captured.parser)
    flags = [arg.split("=", 1)[0] for arg in captured.args if FLAG.fullmatch(arg.split("=", 1)[0])]
    if captured.known and entry in PASS_THROUGH:  # what it does not know goes to the next entry point
        passed_on = [flag for flag in flags if flag not in known]
        if must_parse:
            passed_on = _parse_for_real(captured)
        if passed_on:
            check_entry(PASS_THROUGH[entry], passed_on, False, monkeypatch, where)
        return
    missing = [flag for flag in flags if flag not in known]
    assert not missing, (f"{where}: {captured.parser.prog} has no option {', '.join(missing)} "
                         f"(its options: {', '.join(sorted(known))})")
    if must_parse:
        _parse_for_real(captured)


def _script_options(script: Path) -> tuple[set[str], set[str]]:
    """Options a shell script handles itself (its `case` patterns) and the variables it reads."""
    text = script.read_text()
    options = set()
    for pattern in re.findall(r"^\s*([-\w|=*\"']+)\)", text, flags=re.M):
        for alternative in pattern.split("|"):
            alternative = alternative.strip("\"'").split("=", 1)[0]
            if alternative.startswith("--"):
                options.add(alternative)
    variables = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", text))
    return options, variables


def _split(command: DocCommand) -> list[str]:
    tokens = shlex.split(command.text, comments=True)
    if not command.fenced:  # inline spans: drop placeholders such as [--config PRESET] and ...
        tokens = [t.strip("[]") for t in tokens if t not in ("...", "…")]
    return tokens


def _entry_and_args(tokens: list[str]) -> tuple[dict, str | None, list[str]]:
    env = {}
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    if not tokens:
        return env, None, []
    head = tokens[0]
    if head in ("python", "python3"):
        if len(tokens) > 2 and tokens[1] == "-m":
            return env, tokens[2], tokens[3:]
        if len(tokens) > 1 and tokens[1].endswith(".py"):
            return env, tokens[1], tokens[2:]
        return env, None, []
    if head == "bash" and len(tokens) > 1:
        return env, tokens[1], tokens[2:]
    if head in ("torchrun", "accelerate") and "-m" in tokens:
        index = tokens.index("-m")
        return env, tokens[index + 1], tokens[index + 2:]
    return env, None, []


def _ours(entry: str | None) -> bool:
    return entry is not None and (entry.split(".")[0] in ("longvie", "utils") or entry.endswith((".py", ".sh")))


def test_the_docs_show_commands():
    """The collector finds the commands the pages show (a broken collector would check nothing)."""
    texts = {command.text for command in COMMANDS}
    assert "bash sample_longvideo.sh --preset tiny" in texts
    assert any(text.startswith("python -m longvie.app --preset tiny") for text in texts)
    assert any(text.startswith("python download_wan2.1.py --check-only") for text in texts)
    assert sum(_ours(_entry_and_args(_split(c))[1]) for c in COMMANDS) >= 40


def test_a_wrong_flag_is_caught(monkeypatch):
    """The check fails on a flag the entry point does not have (so a passing run means something)."""
    with pytest.raises(AssertionError, match="--no-such-flag"):
        check_entry("longvie.sample", ["--preset", "tiny", "--no-such-flag"], True, monkeypatch, "here")
    with pytest.raises(AssertionError, match="does not parse"):
        check_entry("longvie.sample", ["--steps", "many"], True, monkeypatch, "here")
    with pytest.raises(AssertionError, match="--frame"):  # an abbreviation parses, but is not documented-exact
        check_entry("longvie.examples.synthetic", ["/tmp/x", "--frame", "9"], False, monkeypatch, "here")


@pytest.mark.parametrize("command", [c for c in COMMANDS if _ours(_entry_and_args(_split(c))[1])], ids=str)
def test_documented_command_flags_exist(command, monkeypatch):
    env, entry, args = _entry_and_args(_split(command))
    where = f"{command} `{command.text}`"
    if entry.endswith(".sh"):
        script = REPO / entry
        assert script.is_file(), f"{where}: {entry} does not exist"
        handled, variables = _script_options(script)
        unknown_env = sorted(set(env) - variables - {"PYTHON", "PYTHONPATH", "CUDA_VISIBLE_DEVICES"})
        assert not unknown_env, f"{where}: {entry} does not read {', '.join(unknown_env)}"
        if script.name not in SHELL_TARGETS:  # a script without options of its own (utils/get_depth.sh ...)
            assert not any(FLAG.fullmatch(arg.split("=", 1)[0]) for arg in args), \
                f"{where}: add {entry}'s options to SHELL_TARGETS in tests/test_docs.py"
            return
        target, prefix = SHELL_TARGETS[script.name]
        forwarded, index = [], 0
        while index < len(args):
            flag = args[index].split("=", 1)[0]
            if flag in handled:  # the script's own option (and its value)
                target, prefix = SHELL_ROUTES.get((script.name, flag), (target, prefix))
                index += 1 if "=" in args[index] or flag in SHELL_SWITCHES else 2
                continue
            forwarded.append(args[index])
            index += 1
        check_entry(target, prefix + forwarded, command.fenced, monkeypatch, where)
        return
    check_entry(entry, args, command.fenced, monkeypatch, where)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+\s+(.*)$", _strip_fences(page.read_text(encoding="utf-8")), flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_files(page):
    text = _strip_fences(page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`]*`", "", text)
    problems = []
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            problems.append(f"{target}: {linked.relative_to(REPO) if linked.is_relative_to(REPO) else linked} does not exist")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            problems.append(f"{target}: no heading with anchor #{anchor} in {linked.relative_to(REPO)}")
    assert not problems, f"{page.relative_to(REPO)}: " + "; ".join(problems)
