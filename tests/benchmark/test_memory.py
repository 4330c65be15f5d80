"""The memory estimator, against independent counts:

* the tiny model's activation peak against the measured peak RSS of a real CPU run;
* the release weights (bf16 and under the FP8 rule, scales included) against a hand calculation
  from SPEC §1-2 dims;
* the denoiser's live bytes at every block boundary against a sum over shapes (nothing outlives its use);
* the estimator's denoising loop against the sampling code's own loop (GuidedVelocity, the scheduler,
  the step cache), and its shortened depth against the full depth;
* the offload placement rules and training rows against hand-written sums;
* the CLI and ``--max-vram``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longvie.acceleration import memory, offload
from longvie.acceleration.offload import apply_group_offload
from longvie.benchmark.__main__ import main as benchmark_main

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 ** 2
GiB = 1024 ** 3
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
    with memory._fake_mode(), torch.no_grad():  # the CPU's kernels: no CUDA stand-ins
        denoiser = memory.build_models(arch, dtype=torch.float32, vae=False)["denoiser"]
        estimated = memory._measure(lambda: denoiser(**memory.denoiser_inputs(arch, torch.float32,
                                                                              batch=TINY_BATCH)))
    assert estimated > 20 * MiB  # large enough that allocator noise cannot decide the comparison
    assert abs(measured - estimated) <= REL_TOL * estimated + ABS_TOL, (measured, estimated)


# ----------------------------------------------------------------------------------------------- weights
def _linear(fan_in, fan_out, bias=True):
    return fan_in * fan_out + (fan_out if bias else 0)


def _wan_block(dim, ffn, added_kv):
    """Parameters of one WanTransformerBlock, split into (bf16, fp32) counts, and its Linears as
    (fan_in, fan_out) pairs (all with a bias)."""
    linears = [(dim, dim)] * 4 + [(dim, dim)] * 4 + [(added_kv, dim)] * 2 + [(dim, ffn), (ffn, dim)]
    attn1 = 4 * _linear(dim, dim) + 2 * dim  # q, k, v, o + RMSNorm over all heads on q and k
    attn2 = 4 * _linear(dim, dim) + 2 * dim + 2 * _linear(added_kv, dim) + dim  # + k_img, v_img, norm_added_k
    ffn_params = _linear(dim, ffn) + _linear(ffn, dim)
    fp32 = 2 * dim + 6 * dim  # norm2 (affine LayerNorm before cross-attention) + scale_shift_table (1, 6, dim)
    return attn1 + attn2 + ffn_params, fp32, linears


@pytest.fixture(scope="module")
def release_weights():
    return memory.weight_bytes(memory.architecture("longvie2_i2v_14b"))


def test_release_weights_match_a_hand_calculation(release_weights):
    """Bytes from SPEC §1-2 dims: DiT 5120 wide, 40 heads, FFN 13824, 40 blocks, in 36, text 4096,
    CLIP 1280, freq 256; control: 12+12 blocks at half width; umT5-XXL encoder. bf16, with
    diffusers' float32 modules (time embedder, scale/shift tables, norm1-3, RoPE tables) in float32.
    FP8 rule (issue 21): every block Linear in FP8 (1 byte) + one float32 scale per output row; biases,
    norms, modulation tables, embedders, head, the control adapters, control_t_mod and
    control_text_linear as loaded."""
    dim, ffn, layers, heads = 5120, 13824, 40, 40
    bf16, fp32 = 0, 0
    block_bf16, block_fp32, block_linears = _wan_block(dim, ffn, dim)
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
    cb_bf16, cb_fp32, control_linears = _wan_block(half, half_ffn, half)
    control_bf16 = 2 * depth * cb_bf16 + 4 * _linear(dim, half) + depth * _linear(half, dim)
    control = 2 * control_bf16 + 4 * 2 * depth * cb_fp32

    d, dff, vocab, t5_layers, t5_heads, buckets = 4096, 10240, 256384, 24, 64, 32
    t5_layer = 4 * d * d + buckets * t5_heads + 2 * d + 2 * d * dff + dff * d  # attention, rel. bias, 2 norms, gated FFN
    text = 2 * (vocab * d + t5_layers * t5_layer + d)  # embeddings shared with the encoder: once

    weights = release_weights
    assert weights.components["dit"] == dit
    assert weights.components["control"] == control
    assert weights.components["text_encoder"] == text
    # the sizes the issue quotes: DiT + control ~35 GiB, umT5 ~11 GB
    assert 35 < (dit + control) / 2 ** 30 < 36 and 10.5 < text / 2 ** 30 < 10.7
    assert weights.block_main == 2 * block_bf16 + 4 * block_fp32

    # FP8: each stored Linear weight drops from 2 bytes to 1 per element and gains 4 bytes per output row
    stored = [(i, o) for i, o in block_linears] * layers + [(i, o) for i, o in control_linears] * (2 * depth)
    saved = sum(i * o for i, o in stored)
    scales = sum(4 * o for _, o in stored)
    assert weights.fp8_scales == scales
    assert weights.linear_fp8_denoiser == dit + control - saved + scales
    assert weights.fp8_block_main == weights.block_main - sum(i * o - 4 * o for i, o in block_linears)
    assert 18.0 < weights.linear_fp8_denoiser / GiB < 18.5


def test_fp8_rule_keeps_what_the_issue_names():
    """Which Linears are FP8, by name (tiny model): fp8.py converts block Linears only; the adapters,
    control_t_mod, control_text_linear, the embedders and the head stay; the estimator's FP8 count equals the
    bytes of the model fp8.apply_fp8 converts (on the meta device here; real tensors in test_fp8.py)."""
    from longvie.acceleration.fp8 import FP8Linear, apply_fp8, fp8_target_names

    arch = memory.architecture("tiny")
    with torch.device("meta"):
        models = memory.build_models(arch, parts=("denoiser", "text_encoder", "image_encoder", "vae"))
    denoiser = models["denoiser"]
    names = fp8_target_names(denoiser)
    assert names and all(".blocks." in n or ".control_blocks_" in n for n in names)
    linears = [n for n, m in denoiser.named_modules() if isinstance(m, torch.nn.Linear)]
    kept = set(linears) - set(names)
    for prefix in ("control.control_t_mod", "control.control_text_linear", "control.control_initial_combine_linear",
                   "control.control_combine_linears", "transformer.condition_embedder", "transformer.proj_out"):
        assert any(n.startswith(prefix) for n in kept), prefix
    assert all(".blocks." not in n and ".control_blocks_" not in n for n in kept)
    weights = memory.count_weights(arch, models)
    apply_fp8(denoiser, "gemm")
    assert memory.tensor_bytes(denoiser) == weights.linear_fp8_denoiser
    assert sum(m.weight_scale.numel() * 4 for m in denoiser.modules() if isinstance(m, FP8Linear)) == weights.fp8_scales
    assert all(m.weight.dtype == torch.float8_e4m3fn for n, m in denoiser.named_modules() if n in names)


# -------------------------------------------------------------------------------- denoiser intermediates
def _tiny_call_counts():
    """A tiny float32 denoiser, its call inputs, and the element counts of what one call holds throughout:
    ``prepared`` (context, control context, image/history tokens, dense, sparse, RoPE tables) and ``per_call``
    (sinusoid, temb, t_mod, control t_mod)."""
    torch.manual_seed(0)
    arch = memory.architecture("tiny")
    denoiser = memory.build_models(arch, dtype=torch.float32, parts=("denoiser",))["denoiser"]
    inputs = memory.denoiser_inputs(arch, torch.float32)
    t = denoiser.transformer.config
    dim, half = t.num_attention_heads * t.attention_head_dim, t.num_attention_heads * t.attention_head_dim // 2
    frames, height, width = arch.latent_grid
    n = frames * (height // 2) * (width // 2)
    nh = arch.history_latent_frames * (height // 2) * (width // 2)
    context = inputs["image_embeds"].shape[1] + inputs["text_embeds"].shape[1]
    head_dim = t.attention_head_dim
    prepared = (context * dim + context * half + n * dim + nh * dim + 2 * n * half
                + 2 * (nh + n) * head_dim + 2 * n * head_dim)  # context, control context, image/history tokens,
    per_call = t.freq_dim + dim + 6 * dim + 6 * half  # dense, sparse, RoPE tables; sinusoid, temb, t_mod, ctrl t_mod
    return arch, denoiser, inputs, t, dim, half, n, nh, prepared, per_call


def test_nothing_outlives_its_use_between_blocks():
    """Live bytes at the entry of every main block of a real (tiny, float32) denoiser call = the prepared
    clip + the per-call timestep tensors + the block's input (+ the control streams while control blocks
    follow), summed from shapes. The latent tokens, the input tokens, each control residual and the
    control streams after the last control block are freed once read."""
    arch, denoiser, inputs, t, dim, half, n, nh, prepared, per_call = _tiny_call_counts()
    seen = []
    with memory.LiveTensorBytes() as tracker, torch.no_grad():
        hooks = [block.register_forward_pre_hook(lambda module, args, i=i: seen.append((i, tracker.rescan())))
                 for i, block in enumerate(denoiser.transformer.blocks)]
        denoiser(**inputs)
    for hook in hooks:
        hook.remove()
    assert [i for i, _ in seen] == list(range(t.num_layers))
    for index, live in seen:
        streams = 2 * n * half if 0 < index < arch.control_layers else 0
        expected = 4 * (prepared + per_call + (nh + n) * dim + streams)
        assert live == expected, (index, live, expected)


def test_the_first_block_cache_keeps_only_what_it_reads():
    """With the firstblock step cache (a call that runs every block), the live bytes at the entry of every main
    block = the plain path's + what the cache keeps of this call, summed from shapes: block 0's residual (for
    the next call's decision) from block 1 on, and block 0's output tokens (for this call's residual of blocks
    1..) from block 2 on (at block 1 they are its input). Block 0's control streams and the input tokens are
    not kept through blocks 1..: the cache hands them over (the output is the plain path's, bit for bit)."""
    from longvie.acceleration.step_cache import StepCacheConfig, make_step_cache

    arch, denoiser, inputs, t, dim, half, n, nh, prepared, per_call = _tiny_call_counts()
    cache = make_step_cache(StepCacheConfig("firstblock", threshold=0.0, full_first_steps=0, full_last_steps=0), 2)
    seen = []
    with torch.no_grad():
        first_call = denoiser(**inputs, block_stack=cache)  # leaves the cache's residuals behind
        assert torch.equal(first_call, denoiser(**inputs))
        del first_call
        with memory.LiveTensorBytes() as tracker:  # counts what the second call creates
            hooks = [block.register_forward_pre_hook(lambda module, args, i=i: seen.append((i, tracker.rescan())))
                     for i, block in enumerate(denoiser.transformer.blocks)]
            out = denoiser(**inputs, block_stack=cache)
            del out
    for hook in hooks:
        hook.remove()
    assert [i for i, _ in seen] == list(range(t.num_layers)) and cache.skipped == 0
    stream = (nh + n) * dim
    for index, live in seen:
        streams = 2 * n * half if 0 < index < arch.control_layers else 0
        # block 0: nothing of the cache's yet (its tensors from the first call were made outside the tracker);
        # block 1: block 0's residual (its input is block 0's output); later: + block 0's output tokens
        cache_bytes = {0: 0, 1: stream}.get(index, 2 * stream)
        expected = 4 * (prepared + per_call + stream + streams + cache_bytes)
        assert live == expected, (index, live, expected)


# ---------------------------------------------------------------------------------------- denoising loop
def _tiny_denoiser(arch):
    torch.manual_seed(0)
    return memory.build_models(arch, dtype=torch.float32, parts=("denoiser",))["denoiser"]


def _scheduler():
    from longvie.sampling.scheduling import make_sampling_scheduler

    scheduler = make_sampling_scheduler(10, 5.0)  # real tensors (made outside any fake mode)
    scheduler.set_begin_index(0)
    return scheduler


def _sampling_loop(denoiser, arch, cfg, step_cache, steps, scheduler=None):
    """The sampling code's own loop (GuidedVelocity + the scheduler), inputs made as run_denoise_loop makes them."""
    from longvie.acceleration.step_cache import StepCacheConfig, make_step_cache
    from longvie.sampling.guidance import GuidedVelocity

    scheduler = scheduler or _scheduler()
    timesteps = [t.expand(1) for t in scheduler.timesteps[:steps]]

    def run():
        frames, height, width = arch.latent_grid
        tokens = (arch.image_encoder["image_size"] // arch.image_encoder["patch_size"]) ** 2 + 1
        positive = torch.randn(1, memory.TEXT_TOKENS, arch.transformer["text_dim"])
        negative = torch.randn(1, memory.TEXT_TOKENS, arch.transformer["text_dim"]) if cfg != "none" else None
        conditions = dict(image_embeds=torch.randn(1, tokens, arch.transformer["image_dim"]),
                          image_latents=torch.randn(1, 20, frames, height, width),
                          dense_latents=torch.randn(1, 36, frames, height, width),
                          sparse_latents=torch.randn(1, 36, frames, height, width),
                          history_latents=torch.randn(1, 16, arch.history_latent_frames, height, width))
        latents = torch.randn(1, 16, frames, height, width)
        config = StepCacheConfig(step_cache, full_first_steps=steps) if step_cache else None
        make = (lambda: make_step_cache(config, 10)) if step_cache else None
        guided = GuidedVelocity(denoiser, positive, negative, conditions, 5.0, cfg_batch=cfg == "batch",
                                make_block_stack=make)
        for t in timesteps:
            velocity = guided(latents.to(torch.float32), t)
            latents = scheduler.step(velocity, t[0], latents, return_dict=False)[0]

    return run


@pytest.mark.parametrize("cfg,cache", [("sequential", None), ("batch", None), ("none", None),
                                       ("sequential", "firstblock")])
def test_loop_matches_the_sampling_code(cfg, cache):
    """run_denoise_loop (which this layer may use) keeps alive what GuidedVelocity + the scheduler do: two
    prepared clips, the step caches' residuals, the latents and the conditions (real tiny tensors)."""
    arch = memory.architecture("tiny")
    denoiser = _tiny_denoiser(arch)
    with torch.no_grad():
        ours = memory._measure(lambda: memory.run_denoise_loop(denoiser, arch, cfg, cache, steps=2))
        theirs = memory._measure(_sampling_loop(denoiser, arch, cfg, cache, steps=2))
    # the scheduler keeps a few 0-d tensors (sigmas) that the emulation computes as Python floats
    assert abs(ours - theirs) <= 64, (ours, theirs)


def test_shortened_depth_gives_the_full_depth_peak():
    """The loop on 4 main / 3 control blocks peaks as on the full depth (here 6 main / 4 control blocks),
    with a step cache (which holds block 0's output tokens through the stack) and with fp8.py's FP8 layers."""
    arch = memory.architecture("tiny")
    arch = dataclasses.replace(arch, transformer={**arch.transformer, "num_layers": 6}, control_layers=4)
    for cfg, cache, fp8 in [("batch", "firstblock", None), ("parallel", None, "gemm")]:
        short = memory.denoise_loop_peak(arch, cfg, cache, fp8)
        full = memory.denoise_loop_peak(arch, cfg, cache, fp8, full_depth=True)
        assert short == full, (cfg, cache, fp8, short, full)


def test_loop_counts_the_second_branch_and_the_step_cache():
    """Against shape sums: guidance keeps a second prepared clip alive; the step cache keeps two residuals
    (first block's and the rest's) of the main stream per branch through a step."""
    arch = memory.architecture("tiny")
    t = arch.transformer
    dim = t["num_attention_heads"] * t["attention_head_dim"]
    frames, height, width = arch.latent_grid
    n, nh = frames * (height // 2) * (width // 2), arch.history_latent_frames * (height // 2) * (width // 2)
    none = memory.denoise_loop_peak(arch, "none", cuda=False)
    sequential = memory.denoise_loop_peak(arch, "sequential", cuda=False)
    cached = memory.denoise_loop_peak(arch, "sequential", "firstblock", cuda=False)
    text = memory.TEXT_TOKENS * t["text_dim"] * 4
    assert sequential - none >= 4 * (n * dim + nh * dim) + text  # the other branch's image/history tokens, prompt
    assert cached - sequential >= 2 * 2 * 4 * (n + nh) * dim  # two residuals of the main stream per branch


def test_cuda_stand_in_counts_the_fused_rms_norm():
    """On fake tensors, rms_norm as on CUDA allocates its output and a float32 row statistic only."""
    with memory._fake_mode(), torch.no_grad():
        x = torch.randn(4, 1000, 256, dtype=torch.bfloat16)
        weight = torch.ones(256, dtype=torch.bfloat16)
        cpu = memory._measure(lambda: torch.nn.functional.rms_norm(x, (256,), weight, 1e-6))
        with memory.cuda_kernels():
            cuda = memory._measure(lambda: torch.nn.functional.rms_norm(x, (256,), weight, 1e-6))
    assert cuda == 4 * 1000 * 256 * 2 + 4 * 1000 * 4
    assert cpu > 2 * cuda
    assert torch.nn.functional.rms_norm is memory._ORIGINAL_RMS_NORM


@pytest.mark.parametrize("kind,fused,tokens", [("gemm", False, 1000), ("gemm", True, 1000),
                                               ("weight-only", False, 10), ("weight-only", True, 10)])
def test_fp8_layer_transients_against_a_hand_count(kind, fused, tokens):
    """fp8.FP8Linear's own forward (eager), and the fused stand-in of a compiled block, allocate what a hand count
    of the code says, for a (M, K) bf16 input and an (N, K) weight:
    gemm eager: |x| then its row amax (the per-token scales), then x in float32 / scale and its clamp (two float32
    copies alive at once: 8 MK bytes), the FP8 copy (MK), the output (2 MN) and the output + bias (2 MN);
    gemm fused: the FP8 copy + scales (MK + 4 M) with the output and output + bias (4 MN);
    weight-only eager: the weight in float32 and its product with the scales (8 NK); fused: the weight in bf16
    (2 NK) with the output (2 MN)."""
    from longvie.acceleration.fp8 import FP8Linear

    M, K, N = tokens, 256, 384
    with memory._fake_mode(), torch.no_grad(), memory.fused_fp8_kernels(fused):
        layer = FP8Linear.from_linear(torch.nn.Linear(K, N, dtype=torch.bfloat16), kind)
        x = torch.randn(M, K, dtype=torch.bfloat16)
        peak = memory._measure(lambda: layer(x))
    expected = {("gemm", False): max(8 * M * K + 4 * M, M * K + 4 * M + 4 * M * N),
                ("gemm", True): M * K + 4 * M + 4 * M * N,
                ("weight-only", False): max(8 * N * K, 2 * N * K + 2 * M * N),
                ("weight-only", True): 2 * N * K + 2 * M * N}[kind, fused]
    assert peak == expected, (peak, expected)


def test_fp8_eager_quantisation_transient_is_counted():
    """In the loop: FP8 GEMMs in eager mode hold float32 copies of the activation while quantising (above the
    bf16 path); compiled (fused) the FP8 copy of a Linear's input and its scales remain."""
    arch = dataclasses.replace(memory.architecture("tiny"), weight_dtype=torch.bfloat16)
    plain = memory.denoise_loop_peak(arch)
    eager = memory.denoise_loop_peak(arch, fp8="gemm")
    fused = memory.denoise_loop_peak(arch, fp8="gemm", fused=True)
    assert eager > fused > 0 and eager > plain


# ------------------------------------------------------------------------------------------- mode rows
def _synthetic_weights():
    # DiT + control 35 GiB (root 1 GiB, blocks 34 GiB), umT5 10, CLIP 1, VAE 0.5; FP8 denoiser 18 GiB (blocks 17).
    # Group offload: slots of 0.75 GiB (FP8 0.375), 36 pinned slabs of 1 GiB (FP8: 18 of 1 GiB), packing 0.5 GiB over.
    stream = memory.StreamSizes(root=GiB, slot=3 * GiB // 4, slabs=(GiB,) * 36, blocks=34 * GiB, pack_extra=GiB // 2)
    fp8_stream = memory.StreamSizes(root=GiB, slot=3 * GiB // 8, slabs=(GiB,) * 18, blocks=17 * GiB,
                                    pack_extra=GiB // 2)
    return memory.WeightBytes({"dit": 30 * GiB, "control": 5 * GiB, "text_encoder": 10 * GiB,
                               "image_encoder": GiB, "vae": GiB // 2}, block_main=GiB // 2, block_control=GiB // 8,
                              denoiser_root=GiB, largest_tensor=GiB // 8, linear_fp8_denoiser=18 * GiB,
                              trainable_control_fp32=10 * GiB, fp8_block_main=GiB // 4, fp8_block_control=GiB // 16,
                              fp8_root=GiB, stream=stream, fp8_stream=fp8_stream)


def test_placement_rules_and_max_vram_choice():
    """Each stage's resident weights per mode, as python -m longvie.sample runs it (umT5 only for the text stage:
    it is released once the prompts are cached), by hand: diffusers' model offload keeps the image encoder through
    the VAE encodes and the VAE through denoising; group offload keeps the VAE, the root and two slots resident."""
    w = _synthetic_weights()
    peaks = {"text_encoder": GiB, "image_encoder": GiB // 4, "vae_encode": 5 * GiB, "vae_decode": 6 * GiB}
    loop = {("sequential", None, None, False): 3 * GiB, ("sequential", None, "gemm", False): 4 * GiB,
            ("sequential", None, "weight-only", False): 3 * GiB}
    rows = {r.mode: r for r in memory.inference_modes(w, peaks, loop_peaks=loop)}
    assert list(rows) == ["none", "model", "group", "fp8+none", "fp8+model", "fp8+group"]
    everything = w.total  # 46.5 GiB
    # none: the text stage holds everything (+1 GiB of umT5 activations); later stages everything but umT5
    assert rows["none"].gpu_bytes == memory.with_margin(everything + GiB)
    assert rows["none"].parts["gpu_keep_umt5"] == memory.with_margin(everything + 6 * GiB)  # the app keeps umT5
    assert rows["model"].gpu_bytes == memory.with_margin(35 * GiB + GiB // 2 + 3 * GiB)  # denoiser + VAE + loop
    # group: VAE 0.5 + root 1 + 2 slots of 0.75, + umT5 10 and its 1 GiB of activations
    assert rows["group"].gpu_bytes == memory.with_margin(GiB // 2 + GiB + 2 * (3 * GiB // 4) + 10 * GiB + GiB)
    assert rows["fp8+group"].gpu_bytes == memory.with_margin(GiB // 2 + GiB + 2 * (3 * GiB // 8) + 10 * GiB + GiB)
    assert rows["fp8+model"].gpu_bytes == memory.with_margin(18 * GiB + GiB // 2 + 4 * GiB)  # larger FP8 kind
    assert rows["fp8+none"].gpu_bytes == memory.with_margin(everything - 17 * GiB + GiB)
    host = memory.HOST_PROCESS_BYTES
    # host: every mode first loads every model (46.5 GiB); then none keeps nothing, model keeps every model,
    # group keeps umT5 + CLIP + the pinned slabs (11 + 36 = 47 GiB: more than loading)
    assert rows["none"].host_bytes == everything + host and rows["none"].parts["host_after_release"] == host
    assert rows["model"].host_bytes == everything + host
    assert rows["model"].parts["host_after_release"] == everything - 10 * GiB + host
    assert rows["group"].host_bytes == 47 * GiB + host and rows["group"].parts["host_after_release"] == 37 * GiB + host
    assert rows["fp8+model"].parts["host_after_release"] == everything - 17 * GiB - 10 * GiB + host
    assert rows["fp8+group"].host_bytes == everything + host  # loading (bf16) is the peak
    assert rows["fp8+group"].parts["host_after_release"] == GiB + 18 * GiB + host
    assert memory.lightest_mode(list(rows.values()), 80).mode == "none"
    assert memory.lightest_mode(list(rows.values()), 45).mode == "model"
    assert memory.lightest_mode(list(rows.values()), 17).mode == "group"
    with pytest.raises(ValueError, match="no mode fits 4 GiB"):
        memory.lightest_mode(list(rows.values()), 4)


def test_multi_rank_rows_count_umt5_on_rank_0_only():
    """CFG-parallel (2 ranks), by hand: rank 0 alone loads umT5 (loads first, the other rank waits at a barrier,
    then loads everything but umT5 while rank 0 holds its models) and releases it once the prompts are cached;
    the other rank never holds it on the GPU."""
    w = _synthetic_weights()
    host = memory.HOST_PROCESS_BYTES
    everything, umt5 = w.total, 10 * GiB
    # model: rank 0 holds every model (46.5) while rank 1 loads all but umT5 (36.5); after release 36.5 + 36.5
    assert memory.host_bytes(w, "model", ranks=2) == 2 * host + everything + (everything - umt5)
    assert memory.host_bytes(w, "model", ranks=2, released=True) == 2 * host + 2 * (everything - umt5)
    # group: rank 0 holds umT5 + CLIP + slabs (47) while rank 1 peaks at max(loading 36.5, packing
    # CLIP 1 + VAE 0.5 + blocks 34 + 0.5 = 36, sampling CLIP 1 + slabs 36 = 37)
    assert memory.host_bytes(w, "group", ranks=2) == 2 * host + 47 * GiB + 37 * GiB
    assert memory.host_bytes(w, "group", ranks=2, released=True) == 2 * host + 37 * GiB + 37 * GiB
    # none: only loading needs host RAM: rank 0 alone (46.5), then rank 1 (36.5) while rank 0 holds nothing
    assert memory.host_bytes(w, "none", ranks=2) == 2 * host + everything
    peaks = {"text_encoder": GiB, "image_encoder": GiB // 4, "vae_encode": 5 * GiB, "vae_decode": 6 * GiB}
    loop = {("parallel", None, None, False): 3 * GiB}
    row = memory.estimate_mode(w, peaks, loop, memory.InferenceMode("none", cfg="parallel"))
    assert row.parts["gpu_rank0"] == memory.with_margin(everything + GiB)  # the text stage, umT5 on the GPU
    assert row.parts["gpu_other_ranks"] == memory.with_margin(everything - umt5 + 6 * GiB)  # no umT5 ever
    assert row.gpu_bytes == row.parts["gpu_rank0"] and "rank 1" in row.note


class _StandInStream:
    """CPU stand-in for group offload's copy stream (events are placeholders)."""

    def wait_event(self, event):
        pass

    def record_event(self, event=None):
        return None


@pytest.mark.parametrize("fp8", [None, "gemm"])
def test_group_offload_sizes_are_the_streamers_allocations(monkeypatch, fp8):
    """The estimator's group-offload sizes (read on the meta device) against what a real BlockStreamer allocates
    on the tiny model (CPU stand-in stream, pinned slabs asked for, 64 KiB slabs so that there are several):
    every host slab (size and order), the device slots, the root kept on the device, and the most the slabs
    allocated exceed the bytes packed into them while packing (originals are released as they are copied)."""
    from longvie.acceleration.fp8 import apply_fp8

    monkeypatch.setattr(offload, "SLAB_BYTES", 64 * 1024)
    arch = memory.architecture("tiny")
    with torch.device("meta"):
        meta = memory.build_models(arch, parts=("denoiser",))["denoiser"]
    if fp8:
        apply_fp8(meta, fp8)
    estimated = memory.stream_sizes(meta)

    torch.manual_seed(0)
    denoiser = memory.build_models(arch, parts=("denoiser",))["denoiser"]
    if fp8:
        apply_fp8(denoiser, fp8)
    events = []  # ("slab", bytes) per host allocation, ("packed", bytes) per block tensor bound to its host copy
    real_allocate, real_bind = offload._allocate_host, offload._bind

    def allocate(nbytes, pin):
        assert pin
        events.append(("slab", nbytes))
        return real_allocate(nbytes, False)  # page-locking needs a CUDA driver

    def bind(module, kind, name, tensor):
        if events:  # after the first slab: the packing of the block tensors (the root moved before)
            events.append(("packed", tensor.numel() * tensor.element_size()))
        real_bind(module, kind, name, tensor)

    monkeypatch.setattr(offload, "_allocate_host", allocate)
    monkeypatch.setattr(offload, "_bind", bind)
    streamer = offload.BlockStreamer(denoiser, torch.device("cpu"), stream=_StandInStream(), pin=True)
    slabs = tuple(n for kind, n in events if kind == "slab")
    assert len(slabs) > 3 and slabs == estimated.slabs and streamer.pinned_bytes == estimated.pinned
    assert len(streamer.slots) * streamer.slot_bytes == estimated.slots and streamer.slot_bytes == estimated.slot
    assert streamer.root_bytes == estimated.root and streamer.block_bytes == estimated.blocks
    allocated = packed = extra = 0
    for kind, nbytes in events:
        if kind == "slab":
            allocated += nbytes
            extra = max(extra, allocated - packed)
        else:
            packed += nbytes
    assert packed == estimated.blocks and extra == estimated.pack_extra


def test_tiny_rows_against_an_independent_count():
    """Rows of ``estimate_memory("tiny")`` = hand placement of weights summed from the real tiny models'
    parameters + activation peaks measured on the sampling code itself (fake tensors, CUDA stand-ins)."""
    from longvie.sampling.conditioning import vae_decode, vae_encode

    arch = memory.architecture("tiny")
    report = memory.estimate_memory("tiny", training=False)
    torch.manual_seed(0)
    models = memory.build_models(arch)  # real tensors
    size = {name: sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))
            for name, m in models.items()}
    assert report.weights.denoiser == size["denoiser"]
    scheduler = _scheduler()
    with memory._fake_mode(), torch.no_grad(), memory.cuda_kernels():
        fake = memory.build_models(arch)
        encode = memory._measure(lambda: vae_encode(fake["vae"], torch.randn(1, 3, arch.num_frames, arch.height,
                                                                             arch.width)))
        # vae_decode, then tensor_to_frames' arithmetic on the device (its .numpy() cannot run on fake tensors)
        decode = memory._measure(lambda: [((v.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8) for v in
                                          vae_decode(fake["vae"], torch.randn(1, 16, *arch.latent_grid))])
        loop = memory._measure(_sampling_loop(memory.build_models(memory.loop_architecture(arch),
                                                                  parts=("denoiser",))["denoiser"],
                                              memory.loop_architecture(arch), "sequential", None, 1, scheduler))
    assert report.peaks["vae_encode"] == encode
    assert report.peaks["vae_decode"] == decode
    assert abs(report.peaks["denoise_loop"] - loop) <= 64
    rows = {r.mode: r for r in report.inference}
    stages = {"text_encoder": report.peaks["text_encoder"], "image_encoder": report.peaks["image_encoder"],
              "vae_encode": encode, "vae_decode": decode, "denoise": report.peaks["denoise_loop"]}
    model = {"text_encoder": size["text_encoder"], "image_encoder": size["image_encoder"],
             "vae_encode": size["vae"] + size["image_encoder"], "denoise": size["denoiser"] + size["vae"],
             "vae_decode": size["vae"]}
    assert rows["model"].gpu_bytes == memory.with_margin(max(model[s] + stages[s] for s in stages))
    everything = sum(size.values())  # umT5 on the GPU for the text stage only (released before clip 0)
    later = max(v for k, v in stages.items() if k != "text_encoder")
    assert rows["none"].gpu_bytes == memory.with_margin(max(everything + stages["text_encoder"],
                                                            everything - size["text_encoder"] + later))
    assert rows["none"].parts["gpu_keep_umt5"] == memory.with_margin(everything + max(stages.values()))
    # group: what a real streamer keeps on its device (CPU stand-in stream): the root and its slots, + the VAE
    streamer = apply_group_offload(models["denoiser"], torch.device("cpu"), stream=_StandInStream())
    base = size["vae"] + streamer.root_bytes + len(streamer.slots) * streamer.slot_bytes
    group = {"text_encoder": base + size["text_encoder"], "image_encoder": base + size["image_encoder"]}
    assert rows["group"].gpu_bytes == memory.with_margin(max([group.get(s, base) + stages[s] for s in stages]))


# ------------------------------------------------------------------------------------------------ training
def test_trainable_patterns_are_the_trainers():
    from longvie.train.trainer import TRAINABLE_PATTERNS

    assert {k: v.pattern for k, v in memory.TRAINABLE_PATTERNS.items()} == \
        {k: v.pattern for k, v in TRAINABLE_PATTERNS.items()}


def test_encoders_rule_is_the_trainers():
    """The estimator counts the encoders the trainer loads, for every stage config, with and without a cache."""
    import yaml

    from longvie.presets.config import CONFIG_DIR
    from longvie.train.runtime import encoders_needed

    for path in sorted(CONFIG_DIR.glob("train_stage*.yaml")):
        config = yaml.safe_load(path.read_text())
        stage = memory.training_stage(config)
        for cache in (False, True):
            assert stage.encoders(cache) == encoders_needed(config, cache), (path.name, cache)
    stages = {s.stage: s for s in memory.training_stages()}
    assert stages[1].encoders(True) == ("vae",)  # depth degradation re-encodes; no CLIP, no umT5
    assert stages[3].encoders(True) == ("image_encoder", "vae")


def test_accelerate_configs_are_read():
    setups = {s.name: s for s in memory.accelerate_setups()}
    assert set(setups) == {p.stem for p in (REPO / "configs" / "accelerate").glob("*.yaml")}
    expected = memory.AccelerateSetup("deepspeed_zero2_8gpu", 8, 1, True, 2, "cpu", "cpu")
    assert setups["deepspeed_zero2_8gpu"] == expected
    assert setups["deepspeed_zero2_multinode"].gpus_per_node == 8
    assert not setups["single_gpu_no_deepspeed"].deepspeed


def test_stage1_counts_no_history_and_stage3_its_history():
    """Stages 1-2 have no history (history_max_frames 0): their micro-step is measured without it; stage 3
    with 16 history frames (4 latent frames): more tokens, more activations (tiny, fake tensors)."""
    stages = {s.stage: s for s in memory.training_stages()}
    assert stages[1].history_frames == 0 and stages[2].history_frames == 0 and stages[3].history_frames == 16
    arch = dataclasses.replace(memory.architecture("tiny"), weight_dtype=torch.bfloat16)
    kwargs = dict(trainable_dtype=torch.bfloat16, keep_grads=False)
    stage1 = memory.training_activation_peak(arch, trainable=stages[1].groups, history_frames=0, **kwargs)
    no_history_arch = memory.training_activation_peak(dataclasses.replace(arch, history_frames=0),
                                                      trainable=stages[1].groups, **kwargs)
    stage3 = memory.training_activation_peak(arch, trainable=stages[3].groups, history_frames=16, **kwargs)
    assert stage1 == no_history_arch < stage3


def test_training_rows_against_a_hand_count(release_weights):
    """Stage 1 vs stage 3 on the release weights, with given activation peaks: the trainable parameters
    counted by hand from SPEC dims, DeepSpeed's host state (20 bytes per trainable parameter with gradient
    accumulation), the GPU's frozen + bf16 trainable weights + encoders + reduce bucket + staging buffer."""
    dim, half, half_ffn, depth, layers = 5120, 2560, 6912, 12, 40
    block_bf16, block_fp32, _ = _wan_block(half, half_ffn, half)
    control = 2 * depth * (block_bf16 + block_fp32) + 4 * _linear(dim, half) + depth * _linear(half, dim)
    attn1 = layers * (4 * _linear(dim, dim) + 2 * dim)
    w = release_weights
    assert w.trainable["control"][0] == control and w.trainable["dit_self_attention"][0] == attn1
    stages = {s.stage: s for s in memory.training_stages()}
    setups = {s.name: s for s in memory.accelerate_setups()}
    peaks = memory.TrainingPeaks(deepspeed=9 * GiB, plain=12 * GiB, encode=3 * GiB)
    rows = {}
    for number in (1, 3):
        for cache in (False, True):
            rows[number, cache] = memory.training_estimate(w, stages[number], setups["deepspeed_zero2_8gpu"],
                                                           peaks, latent_cache=cache)
    enc = w.components["text_encoder"] + w.components["image_encoder"] + w.components["vae"]
    bucket = int(5e8) * 2
    for number, params in ((1, control), (3, control + attn1)):
        largest = w.trainable["dit_self_attention"][2] if number == 3 else w.trainable["control"][2]
        loaded = sum(w.trainable[g][1] for g in stages[number].groups)
        step = w.denoiser - loaded + 2 * params + enc + bucket + 2 * largest + 9 * GiB
        loading = w.denoiser - loaded + 4 * params + enc
        row = rows[number, False]
        assert row.gpu_bytes == memory.with_margin(max(step, loading)), number
        assert row.parts["host_state"] == 20 * params
        assert row.host_bytes == 8 * memory.HOST_PROCESS_BYTES + max(20 * params, loading)
    # the review's orders of magnitude: stage 3 near 80 GiB per GPU and ~100+ GiB of optimizer state per node
    assert 100 * GiB < rows[3, False].parts["host_state"] < 135 * GiB
    assert rows[3, False].gpu_bytes > rows[1, False].gpu_bytes
    assert rows[3, False].host_bytes > rows[1, False].host_bytes
    # a latent cache drops umT5 on every rank (and CLIP in stage 1)
    dropped = w.components["text_encoder"] + w.components["image_encoder"]
    assert abs((rows[1, False].gpu_bytes - rows[1, True].gpu_bytes) - (1 + memory.FRAGMENTATION) * dropped) <= 2
    assert rows[1, True].parts["encoders"] == ("vae",)
    assert rows[3, True].parts["encoders"] == ("image_encoder", "vae")
    zero3 = memory.training_estimate(w, stages[3], dataclasses.replace(setups["deepspeed_zero2_8gpu"], zero_stage=3),
                                     peaks)
    assert not zero3.parts["estimated"] and "keep_frozen_fp32" in zero3.note


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_estimates_tiny_and_dispatches(capsys):
    assert benchmark_main(["--estimate-memory", "--config", "tiny", "--no-training", "--no-matrix",
                           "--max-vram", "24"]) == 0
    out = capsys.readouterr().out
    assert "ESTIMATES, not measurements" in out and "| group" in out and "| fp8+none" in out
    assert "use offload mode 'none'" in out and "host margin" in out
