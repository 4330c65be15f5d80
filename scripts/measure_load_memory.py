#!/usr/bin/env python
"""Measure the peak RAM (RSS) of loading a multi-shard original-layout Wan DiT checkpoint.

    python scripts/measure_load_memory.py --size-mb 200 --shards 4
    python scripts/measure_load_memory.py --size-mb 2000 --shards 7 --dtype bfloat16

Writes a random-weight Wan2.1-I2V-shaped DiT (width 512, as many blocks as the size asks for) in the
original layout (config.json + diffusion_pytorch_model-*-of-*.safetensors + index json), then loads
it with ``longvie.weights.original_layout.load_original_transformer`` in a fresh subprocess and reports:

* baseline RSS: after all imports, right before loading;
* peak RSS while loading (the kernel's high-water mark VmHWM, reset just before loading; where that
  reset is not possible, getrusage's ru_maxrss, which then also covers the imports);
* RSS after reading every weight once (memory-mapped pages count once they are touched).

The increase over the baseline is compared with the checkpoint size; a loader that materialised a
second copy of the weights would show about 2x. Prints one JSON object as the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DIM, HEADS, FFN, TEXT_DIM, IMAGE_DIM, FREQ_DIM = 512, 4, 2048, 256, 256, 64


def dit_config(num_layers: int) -> dict:
    return dict(patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=DIM // HEADS, in_channels=36,
                out_channels=16, text_dim=TEXT_DIM, freq_dim=FREQ_DIM, ffn_dim=FFN, num_layers=num_layers,
                cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=IMAGE_DIM,
                added_kv_proj_dim=DIM)


def original_shapes(num_layers: int) -> dict[str, tuple]:
    """Original-Wan names and shapes of a DiT with ``num_layers`` blocks (built on the meta device)."""
    import torch
    from diffusers import WanTransformer3DModel

    from longvie.weights.checkpoint_keys import to_original_dit_state_dict

    with torch.device("meta"):
        model = WanTransformer3DModel(**dit_config(num_layers))
    return {k: tuple(v.shape) for k, v in to_original_dit_state_dict(model.state_dict()).items()}


def write_checkpoint(folder: Path, size_mb: float, num_shards: int, file_dtype) -> int:
    """Write the sharded checkpoint shard by shard (never the whole model in memory); returns its bytes."""
    import torch
    from safetensors.torch import save_file

    bytes_per = torch.empty(0, dtype=file_dtype).element_size()
    per_layer = sum(torch.Size(s).numel() for s in original_shapes(2).values()) - \
        sum(torch.Size(s).numel() for s in original_shapes(1).values())
    num_layers = max(num_shards, round(size_mb * 1e6 / (per_layer * bytes_per)))
    shapes = original_shapes(num_layers)
    keys = list(shapes)
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    for i in range(num_shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        part_keys = keys[round(i * len(keys) / num_shards):round((i + 1) * len(keys) / num_shards)]
        part = {k: (torch.randn(shapes[k], generator=generator) * 0.02).to(file_dtype) for k in part_keys}
        save_file(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
        total += (folder / name).stat().st_size
        del part
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    wan_config = {"_class_name": "WanModel", "model_type": "i2v", "dim": DIM, "num_heads": HEADS,
                  "num_layers": num_layers, "ffn_dim": FFN, "freq_dim": FREQ_DIM, "in_dim": 36, "out_dim": 16,
                  "eps": 1e-6, "text_len": 512}
    (folder / "config.json").write_text(json.dumps(wan_config))
    return total


# --------------------------------------------------------------------------- child process
def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_mb(reset_ok: bool) -> float:
    if reset_ok:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def child(folder: Path, dtype_name: str) -> dict:
    import gc

    import torch
    from accelerate import init_empty_weights  # noqa: F401 - imported before the baseline: the cost of
    from diffusers import WanTransformer3DModel  # noqa: F401 - importing libraries is not the cost of loading

    from longvie.presets.config import torch_dtype
    from longvie.weights.original_layout import load_original_transformer

    dtype = torch_dtype(dtype_name)
    gc.collect()
    reset_ok = _reset_peak()
    baseline = _rss_mb()
    model = load_original_transformer(folder, torch_dtype=dtype)
    peak_load = _peak_mb(reset_ok)
    after_load = _rss_mb()
    with torch.no_grad():
        checksum = sum(float(p.float().abs().sum()) for p in model.parameters())
    peak_touch = _peak_mb(reset_ok)
    return dict(baseline_rss_mb=baseline, peak_rss_load_mb=peak_load, rss_after_load_mb=after_load,
                peak_rss_after_touch_mb=peak_touch, rss_after_touch_mb=_rss_mb(), peak_is_hwm_reset=reset_ok,
                params=sum(p.numel() for p in model.parameters()), checksum=checksum)


# --------------------------------------------------------------------------- parent
def measure(size_mb: float, num_shards: int, dtype: str = "float32", file_dtype: str = "float32",
            workdir: Path | None = None) -> dict:
    """Write a checkpoint, load it in a subprocess, and return the measurements (sizes in MB)."""
    from longvie.presets.config import torch_dtype

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp) / "Wan2.1-I2V-measure"
        size = write_checkpoint(folder, size_mb, num_shards, torch_dtype(file_dtype))
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(folder), "--dtype", dtype],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        if out.returncode != 0:
            raise RuntimeError(f"measuring subprocess failed:\n{out.stderr[-4000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(checkpoint_mb=size / 2**20, shards=num_shards, load_dtype=dtype, file_dtype=file_dtype)
    result["load_increase_mb"] = result["peak_rss_load_mb"] - result["baseline_rss_mb"]
    result["touch_increase_mb"] = result["peak_rss_after_touch_mb"] - result["baseline_rss_mb"]
    result["load_increase_ratio"] = result["load_increase_mb"] / result["checkpoint_mb"]
    result["touch_increase_ratio"] = result["touch_increase_mb"] / result["checkpoint_mb"]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=200.0, help="checkpoint size to write (MB)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--dtype", default="float32", help="dtype to load into (float32, bfloat16, float16)")
    parser.add_argument("--file-dtype", default="float32", help="dtype stored in the checkpoint")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the temporary checkpoint")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.dtype)))
        return 0
    r = measure(args.size_mb, args.shards, args.dtype, args.file_dtype, args.workdir)
    print(f"checkpoint: {r['checkpoint_mb']:.0f} MB in {r['shards']} shards ({r['file_dtype']}), "
          f"loaded as {r['load_dtype']}")
    print(f"baseline RSS before loading: {r['baseline_rss_mb']:.0f} MB")
    print(f"peak RSS while loading:      {r['peak_rss_load_mb']:.0f} MB  (+{r['load_increase_mb']:.0f} MB = "
          f"{r['load_increase_ratio']:.2f} x checkpoint)")
    print(f"peak RSS after reading every weight: {r['peak_rss_after_touch_mb']:.0f} MB  "
          f"(+{r['touch_increase_mb']:.0f} MB = {r['touch_increase_ratio']:.2f} x checkpoint)")
    if not r["peak_is_hwm_reset"]:
        print("(peak from ru_maxrss: it includes the imports, so the increase is an upper bound)")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
