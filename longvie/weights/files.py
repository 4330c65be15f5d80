"""Which files a Wan2.1-I2V / LongVie 2 weights folder must hold, and whether they are complete.

Checks read only file headers (a few KB each), never tensor data, so they run in seconds even on
the ~80 GB of the 14B release. Every problem names the file, what was expected and what was found.

Used by the loaders (before touching a checkpoint) and by ``download_wan2.1.py`` (after a download).
"""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from .. import LongVieError

# Original layout, repo "Wan-AI/Wan2.1-I2V-14B-480P" (file names from Wan2.1's wan/configs/wan_i2v_14B.py
# and the repo's file list).
CONTROL_FILENAME = "control.safetensors"
DIT_FILENAME = "dit.safetensors"


class WeightsError(LongVieError, ValueError):
    """A weights file is missing, unreadable, or not the model we expect."""


ORIGINAL_DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
ORIGINAL_DIT_CONFIG = "config.json"                       # WanModel config (dim, num_heads, model_type, ...)
ORIGINAL_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
ORIGINAL_CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
ORIGINAL_VAE_FILE = "Wan2.1_VAE.pth"
ORIGINAL_T5_TOKENIZER_DIR = "google/umt5-xxl"
ORIGINAL_CLIP_TOKENIZER_DIR = "xlm-roberta-large"         # text tower only; not needed for images

# diffusers layout, repo "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers" (WanImageToVideoPipeline components).
DIFFUSERS_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor")
WEIGHT_COMPONENTS = ("transformer", "vae", "text_encoder", "image_encoder")

_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors caps its JSON header at 100 MB


def _size(path: Path) -> str:
    return f"{path.stat().st_size:,} bytes"


# --------------------------------------------------------------------------- single files
def safetensors_header(path) -> dict:
    """The JSON header of a .safetensors file ({name: {dtype, shape, data_offsets}}, plus __metadata__).

    The format (github.com/huggingface/safetensors, "Format"): 8-byte little-endian header length N,
    N bytes of JSON, then the tensor bytes; ``data_offsets`` are relative to the end of the header.
    A file shorter than 8 + N + the largest end offset is truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found.")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise WeightsError(f"{path}: truncated ({size} bytes); a .safetensors file starts with an 8-byte "
                               "header length. Delete it and download it again.")
        header_len = struct.unpack("<Q", raw)[0]
        if header_len > _MAX_HEADER_BYTES or header_len > size - 8:
            raise WeightsError(f"{path}: not a valid .safetensors file or truncated ({_size(path)}, header claims "
                               f"{header_len:,} bytes). Delete it and download it again.")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise WeightsError(f"{path}: unreadable .safetensors header ({err}); the file is corrupt. "
                               "Delete it and download it again.") from None
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    expected = 8 + header_len + end
    if size < expected:
        raise WeightsError(f"{path}: truncated: the file has {size:,} bytes but its header describes {expected:,} "
                           "bytes. The download was interrupted; delete the file and download it again.")
    return header


def safetensors_shapes(path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of a .safetensors file, from its header only."""
    return {key: tuple(entry["shape"]) for key, entry in safetensors_header(path).items() if key != "__metadata__"}


def check_sharded_checkpoint(index_path, hint: str = "") -> dict[str, Path]:
    """Check a ``*.safetensors.index.json`` and every shard it names; return {tensor name: shard path}.

    Raises one :class:`WeightsError` listing every missing, truncated or incomplete shard.
    """
    index_path = Path(index_path)
    if not index_path.is_file():
        raise WeightsError(f"{index_path}: index file not found; it lists which shard holds each tensor. "
                           f"{hint}".strip())
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as err:
        raise WeightsError(f"{index_path}: not a safetensors index (expected a JSON object with 'weight_map'): "
                           f"{err}. {hint}".strip()) from None
    by_shard: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(tensor)
    problems = []
    for shard in sorted(by_shard):
        path = index_path.parent / shard
        names = sorted(by_shard[shard])
        if not path.is_file():
            problems.append(f"missing shard {path} (named in {index_path.name}; it should hold {len(names)} "
                            f"tensors such as {names[0]})")
            continue
        try:
            present = set(safetensors_shapes(path))
        except WeightsError as err:
            problems.append(str(err))
            continue
        absent = [name for name in names if name not in present]
        if absent:
            problems.append(f"{path}: lacks {len(absent)} tensor(s) that {index_path.name} assigns to it, e.g. "
                            f"{absent[0]}; the shard belongs to another checkpoint or is damaged")
    if problems:
        raise WeightsError(f"{index_path.parent}: incomplete sharded checkpoint:\n  " + "\n  ".join(problems)
                           + (f"\n{hint}" if hint else ""))
    return {tensor: index_path.parent / shard for tensor, shard in weight_map.items()}


# torch.save's legacy (pre-1.6, non-zip) format starts with a pickled magic number
# (torch/serialization.py, MAGIC_NUMBER = 0x1950a86a20f9469cfc6c).
_LEGACY_TORCH_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def torch_file_format(path) -> str:
    """'zip' (memory-mappable torch.save file) or 'legacy'; raises for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found.")
    with open(path, "rb") as handle:
        head = handle.read(32)
    if zipfile.is_zipfile(path):
        return "zip"
    if head.startswith(b"PK\x03\x04"):
        raise WeightsError(f"{path}: truncated ({_size(path)}): it starts like a torch.save zip archive but its "
                           "end (the zip directory) is missing. Delete it and download it again.")
    if head[:2] == b"\x80\x02" and _LEGACY_TORCH_MAGIC in head:
        return "legacy"
    raise WeightsError(f"{path}: not a PyTorch checkpoint ({_size(path)}; expected a torch.save file). "
                       "Delete it and download it again.")


# --------------------------------------------------------------------------- whole folders
def _tokenizer_problem(folder: Path) -> list[str]:
    if not folder.is_dir():
        return [f"{folder}: tokenizer folder missing"]
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        return [f"{folder}: holds neither {' nor '.join(_TOKENIZER_FILES)}"]
    return []


def _check(fn, *args) -> list[str]:
    try:
        fn(*args)
    except WeightsError as err:
        return [str(err)]
    return []


def original_layout_problems(base_dir) -> list[str]:
    """Problems of an original-layout Wan2.1-I2V folder ("Wan-AI/Wan2.1-I2V-14B-480P"); [] if complete."""
    base_dir = Path(base_dir)
    problems = _check(check_sharded_checkpoint, base_dir / ORIGINAL_DIT_INDEX)
    for name in (ORIGINAL_T5_FILE, ORIGINAL_CLIP_FILE, ORIGINAL_VAE_FILE):
        problems += _check(torch_file_format, base_dir / name)
    if not (base_dir / ORIGINAL_DIT_CONFIG).is_file():
        problems.append(f"{base_dir / ORIGINAL_DIT_CONFIG}: missing (the DiT's WanModel config)")
    problems += _tokenizer_problem(base_dir / ORIGINAL_T5_TOKENIZER_DIR)
    return problems


def _component_weight_problems(folder: Path) -> list[str]:
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        return [p for index in indexes for p in _check(check_sharded_checkpoint, index)]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return [f"{folder}: no .safetensors weights"]
    return [p for path in files for p in _check(safetensors_header, path)]


def diffusers_layout_problems(base_dir) -> list[str]:
    """Problems of a diffusers-layout folder ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"); [] if complete."""
    base_dir = Path(base_dir)
    problems = [] if (base_dir / "model_index.json").is_file() else [f"{base_dir / 'model_index.json'}: missing"]
    for component in DIFFUSERS_COMPONENTS:
        folder = base_dir / component
        if not folder.is_dir():
            problems.append(f"{folder}: missing")
        elif component == "tokenizer":
            problems += _tokenizer_problem(folder)
        elif component in WEIGHT_COMPONENTS:
            if not (folder / "config.json").is_file():
                problems.append(f"{folder / 'config.json'}: missing")
            problems += _component_weight_problems(folder)
    return problems


def longvie_folder_problems(longvie_dir, filenames=(CONTROL_FILENAME, DIT_FILENAME)) -> list[str]:
    """Problems of a LongVie 2 weights folder (control.safetensors, dit.safetensors); [] if complete."""
    longvie_dir = Path(longvie_dir)
    return [p for name in filenames for p in _check(safetensors_header, longvie_dir / Path(name).name)]


# --------------------------------------------------------------------------- tensor contents
def nonfinite_tensor_problems(path, progress=None) -> list[str]:
    """Read every tensor of a .safetensors or torch.save file and report the ones holding NaN or Inf.

    Unlike the checks above this reads all the data (minutes for the 14B release); it finds damage
    that headers cannot show (a corrupted download of the right length, a checkpoint saved after
    training diverged). ``progress`` is called with each tensor name (for a progress bar).
    """
    import torch

    path = Path(path)
    bad, total = [], 0

    def check(name: str, tensor) -> None:
        nonlocal total
        total += 1
        if progress is not None:
            progress(name)
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad.append(name)

    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():
                    check(name, handle.get_tensor(name))
        else:
            state = torch.load(path, map_location="cpu", mmap=torch_file_format(path) == "zip", weights_only=True)
            stack = [("", state)]
            while stack:
                prefix, node = stack.pop()
                if isinstance(node, dict):
                    stack += [(f"{prefix}{k}.", v) for k, v in node.items()]
                else:
                    check(prefix.rstrip("."), node)
    except WeightsError as err:
        return [str(err)]
    except Exception as err:  # noqa: BLE001 - any reader error means the file is damaged
        return [f"{path}: cannot read its tensors ({type(err).__name__}: {err}). Delete it and download it again."]
    if bad:
        return [f"{path}: {len(bad)} of {total} tensor(s) hold NaN or infinite values, e.g. {bad[0]}; the file is "
                "damaged (or was saved from a diverged run). Delete it and download it again."]
    return []


def weight_files(folder) -> list[Path]:
    """Every weights file under ``folder`` (.safetensors, .pth, .pt, .bin), sorted."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".pth", ".pt", ".bin"))
