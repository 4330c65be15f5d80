"""Downloading the weights LongVie 2 runs on: the Wan2.1-I2V-14B-480P base model and the LongVie 2 weights.

    python download_wan2.1.py                      # diffusers layout (default) + LongVie 2 -> ./models
    python download_wan2.1.py --layout original    # the original Wan2.1 layout (what upstream LongVie uses)
    python download_wan2.1.py --dry-run            # print the plan; download nothing
    python download_wan2.1.py --check-only         # check what is on disk; print the config lines
    python download_wan2.1.py --check-only --deep  # also read every tensor and look for NaN/Inf (minutes)
    python download_wan2.1.py --source modelscope  # base model from ModelScope (pip install modelscope)
    python download_wan2.1.py --fast-lora          # also the 4-step distill LoRA of the fast mode (~0.7 GB)

Downloads go through huggingface_hub (progress bars; an interrupted run resumes where it stopped when
started again). Afterwards every file is checked: each shard named in a *.safetensors.index.json
must exist and be as long as its header says, each .pth must be a complete torch.save archive.
The script ends by printing the ``base_model_dir`` / ``longvie_dir`` lines for
configs/longvie2_i2v_14b.yaml. Either layout works with the same config key.
"""
from __future__ import annotations

import argparse
import fnmatch
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .files import diffusers_layout_problems, longvie_folder_problems, original_layout_problems

# The checkout that holds download_wan2.1.py (editable install); ./models is relative to it.
_CHECKOUT = Path(__file__).resolve().parents[2]
REPO_ROOT = _CHECKOUT if (_CHECKOUT / "download_wan2.1.py").is_file() else Path.cwd()

BASE_REPOS = {"diffusers": "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "original": "Wan-AI/Wan2.1-I2V-14B-480P"}
# Only what the model needs (the repos also hold example images and README assets).
BASE_PATTERNS = {
    "diffusers": ["model_index.json", "transformer/*", "text_encoder/*", "tokenizer/*", "image_encoder/*",
                  "image_processor/*", "vae/*", "scheduler/*"],
    "original": ["config.json", "diffusion_pytorch_model*", "models_t5_umt5-xxl-enc-bf16.pth",
                 "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth", "Wan2.1_VAE.pth",
                 "google/umt5-xxl/*", "xlm-roberta-large/*"],
}
# Estimated from parameter counts (DiT 16.39 B stored in float32 = 65.6 GB, which the original repo's
# 7 shards of <= 10 GB imply; umT5-XXL encoder 5.68 B in bf16 = 11.4 GB; CLIP ViT-H/14 (+ XLM-R text
# tower in the original file) 1.3-4.8 GB; VAE 0.13 B = 0.5 GB). Before downloading, the script prints
# the exact total that the Hub reports.
APPROX_BASE_SIZE = "roughly 80 GB"
LONGVIE_REPO = "Vchitect/LongVie2"
# Names used by upstream LongVie's sample_longvideo.sh (./models/LongVie/{control,dit}.safetensors).
LONGVIE_FILES = ("control.safetensors", "dit.safetensors")
# The fast mode's LoRA (configs/longvie2_i2v_14b_fast.yaml): LightX2V's step- and CFG-distilled LoRA for
# Wan2.1-I2V-14B-480P, as LightX2V's docs link it (docs/EN/source/method_tutorials/step_distill.md).
FAST_LORA_REPO = "lightx2v/Wan2.1-I2V-14B-480P-StepDistill-CfgDistill-Lightx2v"
FAST_LORA_FILE = "loras/Wan21_I2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors"

EXIT_OK, EXIT_INCOMPLETE, EXIT_DOWNLOAD_FAILED = 0, 1, 2
EXIT_USAGE = 2  # a folder option names a file (as argparse's own usage errors)


@dataclass
class Item:
    """One thing to download: a snapshot filtered by ``patterns``, or the listed ``files``."""

    what: str
    repo_id: str
    target: Path
    source: str = "huggingface"
    patterns: list[str] | None = None
    files: list[str] = field(default_factory=list)

    def describe(self) -> str:
        kind = f"files {', '.join(self.files)}" if self.files else f"patterns {', '.join(self.patterns or ['*'])}"
        return f"{self.what}: {self.source} repo {self.repo_id}\n    {kind}\n    -> {self.target}"


def base_dir_of(args) -> Path:
    """--base-dir, else OUTPUT/<repo name> (models/Wan2.1-I2V-14B-480P-Diffusers or .../Wan2.1-I2V-14B-480P)."""
    return (args.base_dir or args.output / BASE_REPOS[args.layout].split("/")[1]).resolve()


def longvie_dir_of(args) -> Path:
    return (args.longvie_dir or args.output / "LongVie2").resolve()


def make_plan(args) -> list[Item]:
    plan = []
    if not args.skip_base:
        plan.append(Item(f"Wan2.1-I2V-14B-480P base model, {args.layout} layout", BASE_REPOS[args.layout],
                         base_dir_of(args), args.source, patterns=BASE_PATTERNS[args.layout]))
    if not args.skip_longvie:
        plan.append(Item("LongVie 2 weights", args.longvie_repo, longvie_dir_of(args), files=list(args.longvie_files)))
    if getattr(args, "fast_lora", False):
        plan.append(Item("4-step distill LoRA (fast mode)", FAST_LORA_REPO, (args.output / "loras").resolve(),
                         files=[FAST_LORA_FILE]))
    return plan


def folder_problems(item: Item, layout: str) -> list[str]:
    if item.files:
        return longvie_folder_problems(item.target, item.files)
    return original_layout_problems(item.target) if layout == "original" else diffusers_layout_problems(item.target)


# --------------------------------------------------------------------------- network
def remote_sizes(item: Item) -> dict[str, int]:
    """{path in repo: bytes} of the files this item will fetch (Hugging Face metadata, no download)."""
    import huggingface_hub

    info = huggingface_hub.HfApi().model_info(item.repo_id, files_metadata=True)
    sizes = {s.rfilename: s.size or 0 for s in info.siblings}
    if item.files:
        missing = [f for f in item.files if f not in sizes]
        if missing:
            raise FileNotFoundError(f"{item.repo_id} has no file(s) {missing}; it holds {sorted(sizes)}. "
                                    "Pass the right names with --longvie-files.")
        return {f: sizes[f] for f in item.files}
    return {f: n for f, n in sizes.items() if any(fnmatch.fnmatch(f, p) for p in item.patterns or ["*"])}


def download(item: Item, token: str | None, sizes: dict[str, int] | None = None) -> None:
    """Fetch ``item`` into ``item.target``; files already complete on disk are not fetched again."""
    if item.source == "modelscope":
        try:
            from modelscope import snapshot_download as ms_snapshot_download
        except ImportError:
            raise RuntimeError("--source modelscope needs the modelscope package: pip install modelscope") from None
        ms_snapshot_download(item.repo_id, local_dir=str(item.target), allow_patterns=item.patterns)
        return
    import huggingface_hub

    if not item.files:
        huggingface_hub.snapshot_download(item.repo_id, local_dir=str(item.target), allow_patterns=item.patterns,
                                          token=token)
        return
    for filename in item.files:
        dest = item.target / Path(filename).name  # the loader expects the files at the folder's top level
        expected = (sizes or {}).get(filename)
        if dest.is_file() and not longvie_folder_problems(item.target, [dest.name]) and \
                expected in (None, 0, dest.stat().st_size):
            continue
        local = Path(huggingface_hub.hf_hub_download(item.repo_id, filename, local_dir=str(item.target),
                                                     token=token))
        if local.resolve() != dest.resolve():
            local.replace(dest)


def hand_download_instructions(item: Item, error: BaseException) -> str:
    where = ("https://modelscope.cn/models/" if item.source == "modelscope" else "https://huggingface.co/")
    if item.files:
        wanted = "\n".join(f"      {f}" for f in item.files)
        cli = " ".join(item.files)
    else:
        wanted = "\n".join(f"      {p}" for p in item.patterns or ["*"])
        cli = " ".join(f'--include "{p}"' for p in item.patterns or ["*"])
    return (f"Could not download {item.what} ({type(error).__name__}: {error}).\n"
            f"  Download it by hand on a machine with internet access, then copy it here:\n"
            f"    repo:   {where}{item.repo_id}\n"
            f"    files:\n{wanted}\n"
            f"    into:   {item.target}/   (keep the repo's sub-folders)\n"
            f"  e.g.  hf download {item.repo_id} {cli} --local-dir {item.target}\n"
            f"  Then run `python download_wan2.1.py --check-only` to verify the files.")


# --------------------------------------------------------------------------- reporting
def config_path_text(path: Path) -> str:
    """The path as it should appear in configs/*.yaml: relative to the repo root when inside it."""
    path = path.resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def print_config_lines(args) -> None:
    print("\nPut these lines in configs/longvie2_i2v_14b.yaml (or pass them on the command line):")
    print(f"base_model_dir: {config_path_text(base_dir_of(args))}")
    print(f"longvie_dir: {config_path_text(longvie_dir_of(args))}")


def deep_problems(item: Item) -> list[str]:
    """NaN/Inf scan of every weights file of ``item`` (reads all tensor data)."""
    from tqdm.auto import tqdm

    from .files import nonfinite_tensor_problems, weight_files

    files = [item.target / Path(f).name for f in item.files] if item.files else weight_files(item.target)
    problems = []
    with tqdm(files, desc=f"scanning {item.target.name}", unit="file") as bar:
        for path in bar:
            bar.set_postfix_str(path.name)
            problems += nonfinite_tensor_problems(path)
    return problems


def check(plan: list[Item], layout: str, expected_sizes: dict | None = None, deep: bool = False) -> bool:
    ok = True
    for item in plan:
        problems = folder_problems(item, layout)
        for rel, size in (expected_sizes or {}).get(item.repo_id, {}).items():
            local = item.target / (Path(rel).name if item.files else rel)
            if size and local.is_file() and local.stat().st_size != size:
                problems.append(f"{local}: {local.stat().st_size:,} bytes, the Hub says {size:,}")
        if deep and not problems:
            problems += deep_problems(item)
        if problems:
            ok = False
            print(f"\nINCOMPLETE {item.what} in {item.target}:\n  " + "\n  ".join(problems))
        else:
            print(f"complete{' (every tensor finite)' if deep else ''}: {item.what} in {item.target}")
    return ok


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=sorted(BASE_REPOS), default="diffusers",
                        help=f"diffusers: {BASE_REPOS['diffusers']} (default); original: {BASE_REPOS['original']}")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "models", help="folder for both downloads")
    parser.add_argument("--base-dir", type=Path, default=None,
                        help="base model folder (default: OUTPUT/<repo name>); e.g. an existing upstream folder")
    parser.add_argument("--longvie-dir", type=Path, default=None, help="LongVie 2 folder (default: OUTPUT/LongVie2)")
    parser.add_argument("--source", choices=("huggingface", "modelscope"), default="huggingface",
                        help="where the base model comes from (LongVie 2 weights always come from Hugging Face)")
    parser.add_argument("--longvie-repo", default=LONGVIE_REPO)
    parser.add_argument("--longvie-files", nargs="+", default=list(LONGVIE_FILES),
                        help="file names in the LongVie 2 repo (default: control.safetensors dit.safetensors)")
    parser.add_argument("--skip-base", action="store_true", help="do not download the base model")
    parser.add_argument("--skip-longvie", action="store_true", help="do not download the LongVie 2 weights")
    parser.add_argument("--fast-lora", action="store_true",
                        help=f"also fetch the fast mode's LoRA ({FAST_LORA_REPO}, {FAST_LORA_FILE}) into OUTPUT/loras "
                             "(configs/longvie2_i2v_14b_fast.yaml, --fast)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the local state; download nothing")
    parser.add_argument("--check-only", action="store_true", help="check the files on disk; download nothing")
    parser.add_argument("--deep", action="store_true",
                        help="with --check-only (or after a download): also read every tensor and report NaN/Inf "
                             "values (reads all the data: minutes for the 14B model)")
    parser.add_argument("--token", default=None, help="Hugging Face token (default: the logged-in one, if any)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """``download_wan2.1.py``: one handler; Ctrl-C exits 130, an unexpected error prints one line
    naming the log file with its traceback."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume the download", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"error: {err.filename or ''}: {err.strerror or err} — free space or choose a writable --output",
              file=sys.stderr)
        return EXIT_DOWNLOAD_FAILED
    except Exception as err:  # noqa: BLE001 - one line here, the traceback in the log
        import datetime
        import os

        from .. import log_unexpected_error

        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        log = log_unexpected_error(err, [Path.cwd() / f"download_wan2.1-error-{stamp}-{os.getpid()}.log"])
        print(f"error: unexpected {type(err).__name__}: {err}" + (f" (the traceback is in {log})" if log else ""),
              file=sys.stderr)
        return EXIT_DOWNLOAD_FAILED


def path_problems(args) -> list[str]:
    """Folders named on the command line that are files (or lie under a file): one sentence each."""
    problems = []
    for flag, value in (("--output", args.output), ("--base-dir", args.base_dir), ("--longvie-dir", args.longvie_dir)):
        if value is None:
            continue
        path = Path(value)
        if path.is_file():
            problems.append(f"{flag} {path} is a file, not a folder; {flag} names the folder the weights are (or "
                            "will be) in — give that folder")
            continue
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            problems.append(f"{flag} {path}: {parent} is a file, so this folder cannot exist; give a folder path")
    return problems


def _run(argv=None) -> int:
    args = parse_args(argv)
    problems = path_problems(args)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    plan = make_plan(args)
    files = [item for item in plan if item.target.is_file()]
    if files:
        for item in files:
            print(f"error: {item.target} ({item.what}) is a file, not a folder; move it away or name the folder with "
                  f"{'--longvie-dir' if item.files else '--base-dir'}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        print(f"Plan (nothing is downloaded; the base model is {APPROX_BASE_SIZE}, LongVie 2 a few GB):")
        for item in plan:
            problems = folder_problems(item, args.layout)
            state = "complete on disk" if not problems else f"{len(problems)} problem(s) on disk, first: {problems[0]}"
            print(f"  {item.describe()}\n    now: {state}")
        print_config_lines(args)
        return EXIT_OK
    if args.check_only:
        ok = check(plan, args.layout, deep=args.deep)
        if ok:
            print_config_lines(args)
        else:
            print("\nNot ready: run `python download_wan2.1.py` (it resumes and fetches what is missing or damaged), "
                  "then check again.")
        return EXIT_OK if ok else EXIT_INCOMPLETE

    expected_sizes = {}
    for item in plan:
        if not folder_problems(item, args.layout):  # nothing to fetch: works offline too
            print(f"already complete: {item.what} in {item.target}")
            continue
        try:
            if item.source == "huggingface":
                sizes = remote_sizes(item)
                expected_sizes[item.repo_id] = sizes
                print(f"{item.what}: {len(sizes)} files, {sum(sizes.values()) / 1e9:.1f} GB -> {item.target}")
            item.target.mkdir(parents=True, exist_ok=True)
            download(item, args.token, expected_sizes.get(item.repo_id))
        except KeyboardInterrupt:
            print("\nInterrupted; run the same command again to resume.")
            return EXIT_DOWNLOAD_FAILED
        except Exception as err:  # network, auth, missing repo or file: all end in the same advice
            print(hand_download_instructions(item, err), file=sys.stderr)
            return EXIT_DOWNLOAD_FAILED
    ok = check(plan, args.layout, expected_sizes, deep=args.deep)
    if ok:
        print_config_lines(args)
    else:
        print("\nSome files are missing or damaged: run the same command again (it resumes), or fetch them by hand.")
    return EXIT_OK if ok else EXIT_INCOMPLETE

