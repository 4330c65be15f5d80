"""Memory-lean loading (measured) and clear failures for damaged or wrong weights (CPU, no downloads)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from longvie.presets.tiny import write_sharded_safetensors, write_tiny_original_checkpoints
from longvie.weights.checkpoint_keys import CheckpointKeyError
from longvie.weights.files import ORIGINAL_DIT_INDEX
from longvie.weights.loading import (
    WeightsError,
    detect_layout,
    load_base_components,
    load_control_branch,
    load_transformer,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "tiny_weight_layouts"
    original, longvie = write_tiny_original_checkpoints(root)
    return SimpleNamespace(original=original, diffusers=root / "Wan2.1-I2V-tiny-Diffusers", longvie=longvie)


@pytest.fixture
def original_copy(tiny, tmp_path):
    """A private copy of the tiny original-layout folder, free to damage."""
    return Path(shutil.copytree(tiny.original, tmp_path / "Wan2.1-I2V-14B-480P"))


def _truncate(path: Path, keep: float = 0.5) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(int(size * keep))


def _dit_tensors(folder: Path) -> dict:
    index = json.loads((folder / ORIGINAL_DIT_INDEX).read_text())["weight_map"]
    tensors = {}
    for shard in sorted(set(index.values())):
        tensors.update(load_file(folder / shard))
    return tensors


def _rewrite_dit(folder: Path, tensors: dict, num_shards: int = 7, **config_changes) -> None:
    for shard in folder.glob("diffusion_pytorch_model*"):
        shard.unlink()
    write_sharded_safetensors(tensors, folder, num_shards)
    config = json.loads((folder / "config.json").read_text())
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config))


# --------------------------------------------------------------------------- memory
def test_original_load_peak_rss_stays_below_1_3x_checkpoint_size(tmp_path):
    """Load a 4-shard ~200 MB checkpoint in a subprocess; measure the RSS high-water mark."""
    spec = importlib.util.spec_from_file_location("measure_load_memory", REPO_ROOT / "scripts/measure_load_memory.py")
    measure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(measure)
    result = measure.measure(size_mb=200, num_shards=4, workdir=tmp_path)
    print(json.dumps(result, indent=1))
    assert 180 < result["checkpoint_mb"] < 240
    # while loading (memory-mapped, assigned in place) and after every weight has been read once
    assert result["load_increase_mb"] < 1.3 * result["checkpoint_mb"]
    assert result["touch_increase_mb"] < 1.3 * result["checkpoint_mb"]


# --------------------------------------------------------------------------- damaged files
def test_original_missing_shard_is_named(original_copy):
    (original_copy / "diffusion_pytorch_model-00003-of-00007.safetensors").unlink()
    assert detect_layout(original_copy) == "original"
    with pytest.raises(WeightsError, match=r"missing shard .*diffusion_pytorch_model-00003-of-00007\.safetensors "
                                           r"\(named in diffusion_pytorch_model\.safetensors\.index\.json"):
        load_transformer(original_copy, torch.float32)


def test_original_truncated_shard_is_named(original_copy):
    shard = original_copy / "diffusion_pytorch_model-00002-of-00007.safetensors"
    full = shard.stat().st_size
    _truncate(shard)
    with pytest.raises(WeightsError) as info:
        load_transformer(original_copy, torch.float32)
    message = str(info.value)
    assert f"{shard}: truncated: the file has {full // 2:,} bytes but its header describes {full:,} bytes" in message
    assert "download it again" in message


def test_original_missing_index_is_named(original_copy):
    (original_copy / ORIGINAL_DIT_INDEX).unlink()
    with pytest.raises(WeightsError, match="diffusion_pytorch_model.safetensors.index.json: index file not found"):
        load_transformer(original_copy, torch.float32)


@pytest.mark.parametrize("name", ["models_t5_umt5-xxl-enc-bf16.pth", "Wan2.1_VAE.pth",
                                  "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"])
def test_original_truncated_pth_is_named(original_copy, name):
    _truncate(original_copy / name, 0.6)
    with pytest.raises(WeightsError, match=rf"{name}: truncated .*torch\.save zip archive"):
        load_base_components(original_copy, torch.float32)


def test_original_missing_vae_is_named_with_download_hint(original_copy):
    (original_copy / "Wan2.1_VAE.pth").unlink()
    assert detect_layout(original_copy) == "original"  # still recognised: the loader names what is missing
    with pytest.raises(WeightsError, match=r"Wan2\.1_VAE\.pth: file not found\. .*download_wan2\.1\.py --layout "
                                           r"original.*huggingface\.co/Wan-AI/Wan2\.1-I2V-14B-480P"):
        load_base_components(original_copy, torch.float32)


def test_original_foreign_file_is_rejected(original_copy):
    (original_copy / "models_t5_umt5-xxl-enc-bf16.pth").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(WeightsError, match=r"models_t5_umt5-xxl-enc-bf16\.pth: not a PyTorch checkpoint"):
        load_base_components(original_copy, torch.float32)


def test_legacy_torch_format_still_loads_with_a_memory_warning(tmp_path):
    from longvie.weights.original_layout import load_torch_checkpoint

    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    with pytest.warns(UserWarning, match="legacy .non-zip. format, which cannot be memory-mapped"):
        assert torch.equal(load_torch_checkpoint(path)["w"], torch.ones(3))


# --------------------------------------------------------------------------- other Wan variants
def test_original_t2v_checkpoint_is_rejected(original_copy):
    tensors = {k: v for k, v in _dit_tensors(original_copy).items()
               if not k.startswith("img_emb.") and ".k_img" not in k and ".v_img" not in k}
    tensors["patch_embedding.weight"] = tensors["patch_embedding.weight"][:, :16].contiguous()
    _rewrite_dit(original_copy, tensors, model_type="t2v", in_dim=16)
    with pytest.raises(WeightsError) as info:
        load_transformer(original_copy, torch.float32)
    message = str(info.value)
    assert "diffusion_pytorch_model-*.safetensors: this is not a Wan2.1 image-to-video DiT" in message
    assert "in_dim 16" in message and "no img_emb.*" in message and "no cross_attn.k_img" in message
    assert "config.json model_type 't2v'" in message and "needs Wan2.1-I2V-14B-480P: in_dim 36" in message


def test_original_1_3b_t2v_checkpoint_is_named(tmp_path):
    """Shapes of Wan2.1-T2V-1.3B (dim 1536, in_dim 16); the check reads headers only."""
    folder = tmp_path / "Wan2.1-T2V-1.3B"
    tensors = {"patch_embedding.weight": torch.zeros(1536, 16, 1, 2, 2, dtype=torch.bfloat16),
               "blocks.0.cross_attn.q.weight": torch.zeros(8, 8), "head.head.weight": torch.zeros(64, 8)}
    write_sharded_safetensors(tensors, folder, 1)
    (folder / "config.json").write_text(json.dumps({"_class_name": "WanModel", "model_type": "t2v", "dim": 1536,
                                                    "num_heads": 12, "num_layers": 30, "in_dim": 16}))
    with pytest.raises(WeightsError, match=r"looks like Wan2\.1-T2V-1\.3B \(found in_dim 16, dim 1536"):
        load_transformer(folder, torch.float32)


def test_original_config_json_must_match_the_shapes(original_copy):
    config = json.loads((original_copy / "config.json").read_text())
    config["num_layers"] += 1
    (original_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"config.json does not describe these weights:\n  num_layers: "
                                           r"config.json says 5, the weights have 4"):
        load_transformer(original_copy, torch.float32)


def test_original_720p_folder_warns_that_it_cannot_be_told_apart(tiny, tmp_path):
    folder = Path(shutil.copytree(tiny.original, tmp_path / "Wan2.1-I2V-14B-720P"))
    with pytest.warns(UserWarning, match="720P weights have the same shapes and will load"):
        load_transformer(folder, torch.float32)


# --------------------------------------------------------------------------- LongVie 1 control weights
def test_longvie1_single_branch_control_file_is_rejected(tiny, tmp_path):
    released = load_file(tiny.longvie / "control.safetensors")
    single = {k.replace("control_blocks_dense.", "control_blocks.").replace("_dense.", "."): v
              for k, v in released.items() if "sparse" not in k}
    path = tmp_path / "control.safetensors"
    save_file(single, str(path))
    config = load_transformer(tiny.original, torch.float32).config
    with pytest.raises(CheckpointKeyError) as info:
        load_control_branch(path, config, torch.float32)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "control_blocks.0.self_attn.q.weight" in message
    assert "Expected LongVie 2 control-branch names such as 'control_blocks_dense.0.self_attn.q.weight'" in message
    assert "LongVie 1" in message


def test_dense_only_control_file_is_rejected_naming_the_missing_branch(tiny, tmp_path):
    released = load_file(tiny.longvie / "control.safetensors")
    path = tmp_path / "control.safetensors"
    save_file({k: v for k, v in released.items() if "sparse" not in k}, str(path))
    config = load_transformer(tiny.original, torch.float32).config
    with pytest.raises(CheckpointKeyError) as info:
        load_control_branch(path, config, torch.float32)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "no 'control_blocks_sparse.N.*' keys" in message
    assert "LongVie 1" in message


def test_detect_layout_messages_are_kept(tmp_path):
    with pytest.raises(WeightsError, match="base model folder not found"):
        detect_layout(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="neither a diffusers-layout Wan2.1-I2V folder"):
        detect_layout(tmp_path / "empty")
    assert os.environ.get("HF_HUB_OFFLINE", "") in ("", "0", "1")  # nothing here touched the network
