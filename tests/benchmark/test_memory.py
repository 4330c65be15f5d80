"""The memory estimator: its tiny-model activation peak against the measured peak RSS of a real CPU run,
and the release configuration's weight bytes against a hand calculation from SPEC §1-2 dims."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longvie.acceleration import memory
from longvie.benchmark.__main__ import main as benchmark_main

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 ** 2
# Tolerance of the tiny comparison: 15 % of the estimate + 4 MiB (glibc allocator slack, page
# granularity and the interpreter's own allocations during the call). Measured when written:
# estimate 79.8 MB vs RSS 84.1 MB at batch 24, 61.5 vs 66.1 MB and 122.3 vs 126.7 MB at other shapes.
REL_TOL, ABS_TOL = 0.15, 4 * MiB
TINY_SHAPE = dict(num_frames=21, height=112, width=192)
TINY_BATCH = 12

MEASURE = r"""
import gc, json, sys
import torch
torch.set_num_threads(1)
from longvie.acceleration.memory import architecture, build_models, denoiser_inputs

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

arch = architecture("tiny", **json.loads(sys.argv[1]))
denoiser = build_models(arch, dtype=torch.float32, vae=False)["denoiser"]
with torch.no_grad():
    denoiser(**denoiser_inputs(arch, torch.float32, batch=1))  # warm-up: lazy initialisation
gc.collect()
with open("/proc/self/clear_refs", "w") as handle:  # reset the peak-RSS mark (VmHWM)
    handle.write("5")
base = status("VmRSS")
with torch.no_grad():
    out = denoiser(**denoiser_inputs(arch, torch.float32, batch=int(sys.argv[2])))  # inputs count, as estimated
    del out
print(json.dumps({"peak_rss_increase": status("VmHWM") - base}))
"""


def _can_reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_reset_peak_rss(), reason="needs Linux /proc/self/clear_refs to reset the peak RSS")
def test_tiny_estimate_matches_measured_peak_rss():
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(REPO))  # freed blocks go back to the OS
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", MEASURE, json.dumps(TINY_SHAPE), str(TINY_BATCH)],
                            capture_output=True, text=True, env=env, timeout=300, check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_increase"]
    arch = memory.architecture("tiny", **TINY_SHAPE)
    with memory._fake_mode(), torch.no_grad():
        denoiser = memory.build_models(arch, dtype=torch.float32, vae=False)["denoiser"]
        estimated = memory._measure(lambda: denoiser(**memory.denoiser_inputs(arch, torch.float32,
                                                                              batch=TINY_BATCH)))
    assert estimated > 20 * MiB  # large enough that allocator noise cannot decide the comparison
    assert abs(measured - estimated) <= REL_TOL * estimated + ABS_TOL, (measured, estimated)


def _linear(fan_in, fan_out, bias=True):
    return fan_in * fan_out + (fan_out if bias else 0)


def _wan_block(dim, ffn, added_kv):
    """Parameters of one WanTransformerBlock, split into (bf16, fp32) counts."""
    attn1 = 4 * _linear(dim, dim) + 2 * dim  # q, k, v, o + RMSNorm over all heads on q and k
    attn2 = 4 * _linear(dim, dim) + 2 * dim + 2 * _linear(added_kv, dim) + dim  # + k_img, v_img, norm_added_k
    ffn_params = _linear(dim, ffn) + _linear(ffn, dim)
    fp32 = 2 * dim + 6 * dim  # norm2 (affine LayerNorm before cross-attention) + scale_shift_table (1, 6, dim)
    return attn1 + attn2 + ffn_params, fp32


def test_release_weights_match_a_hand_calculation():
    """Bytes from SPEC §1-2 dims: DiT 5120 wide, 40 heads, FFN 13824, 40 blocks, in 36, text 4096,
    CLIP 1280, freq 256; control: 12+12 blocks at half width; umT5-XXL encoder. bf16, with
    diffusers' float32 modules (time embedder, scale/shift tables, norm1-3, RoPE tables) in float32."""
    dim, ffn, layers, heads = 5120, 13824, 40, 40
    bf16, fp32 = 0, 0
    block_bf16, block_fp32 = _wan_block(dim, ffn, dim)
    bf16 += layers * block_bf16
    fp32 += layers * block_fp32
    bf16 += 36 * dim * 2 * 2 + dim  # patch embedding Conv3d (1, 2, 2)
    fp32 += _linear(256, dim) + _linear(dim, dim)  # time_embedder
    bf16 += _linear(dim, 6 * dim)  # time_proj
    bf16 += _linear(4096, dim) + _linear(dim, dim)  # text_embedder
    fp32 += 2 * 1280 + 2 * dim  # image_embedder norm1 (LayerNorm 1280) and norm2 (LayerNorm 5120)
    bf16 += _linear(1280, 1280) + _linear(1280, dim)  # image_embedder MLP
    bf16 += _linear(dim, 16 * 1 * 2 * 2)  # proj_out
    fp32 += 2 * dim  # output scale_shift_table (1, 2, dim)
    rope = 2 * 1024 * (dim // heads)  # freqs_cos / freqs_sin tables, 1024 positions x head dim, float32
    dit = 2 * bf16 + 4 * (fp32 + rope)

    half, half_ffn, depth = dim // 2, ffn // 2, 12
    cb_bf16, cb_fp32 = _wan_block(half, half_ffn, half)
    control_bf16 = 2 * depth * cb_bf16 + 4 * _linear(dim, half) + depth * _linear(half, dim)
    control = 2 * control_bf16 + 4 * 2 * depth * cb_fp32

    d, dff, vocab, t5_layers, t5_heads, buckets = 4096, 10240, 256384, 24, 64, 32
    t5_layer = 4 * d * d + buckets * t5_heads + 2 * d + 2 * d * dff + dff * d  # attention, rel. bias, 2 norms, gated FFN
    text = 2 * (vocab * d + t5_layers * t5_layer + d)  # embeddings shared with the encoder: once

    weights = memory.weight_bytes(memory.architecture("longvie2_i2v_14b"))
    assert weights.components["dit"] == dit
    assert weights.components["control"] == control
    assert weights.components["text_encoder"] == text
    # the sizes the issue quotes: DiT + control ~35 GiB, umT5 ~11 GB
    assert 35 < (dit + control) / 2 ** 30 < 36 and 10.5 < text / 2 ** 30 < 10.7
    assert weights.block_main == 2 * block_bf16 + 4 * block_fp32


def test_modes_and_max_vram_choice():
    w = memory.WeightBytes({"dit": 30 * 2 ** 30, "control": 5 * 2 ** 30, "text_encoder": 10 * 2 ** 30,
                            "image_encoder": 2 ** 30, "vae": 2 ** 29}, block_main=2 ** 29, block_control=2 ** 27,
                           denoiser_root=2 ** 30, largest_tensor=2 ** 27, linear_fp8_denoiser=18 * 2 ** 30,
                           trainable_control_fp32=10 * 2 ** 30)
    peaks = {"denoiser": 3 * 2 ** 30, "text_encoder": 2 ** 30, "image_encoder": 2 ** 28, "vae_encode": 5 * 2 ** 30,
             "vae_decode": 6 * 2 ** 30}
    rows = {r.mode: r for r in memory.inference_modes(w, peaks)}
    gib = 2 ** 30
    assert rows["none"].gpu_bytes == memory.with_margin(w.total + 6 * gib)
    assert rows["model"].gpu_bytes == memory.with_margin(35 * gib + 3 * gib)
    assert rows["group"].gpu_bytes == memory.with_margin(11 * gib)  # text encoder + its activations
    assert rows["group"].host_bytes == w.total + 2 * 2 ** 29
    assert memory.lightest_mode(list(rows.values()), 80).mode == "none"
    assert memory.lightest_mode(list(rows.values()), 45).mode == "model"
    assert memory.lightest_mode(list(rows.values()), 14).mode == "group"
    with pytest.raises(ValueError, match="no mode fits 4 GiB"):
        memory.lightest_mode(list(rows.values()), 4)


def test_cli_estimates_tiny_and_dispatches(capsys):
    assert benchmark_main(["--estimate-memory", "--config", "tiny", "--no-training", "--max-vram", "24"]) == 0
    out = capsys.readouterr().out
    assert "ESTIMATES, not measurements" in out and "| group" in out and "use offload mode 'none'" in out
