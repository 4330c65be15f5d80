"""The original Wan2.1 layout ("Wan-AI/Wan2.1-I2V-14B-480P") loads into the same models as the
diffusers layout: name tables checked against diffusers' converters and against independent
reference computations written from Wan's module definitions. CPU only, tiny shapes, no downloads."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longvie.presets.tiny import write_tiny_original_checkpoints
from longvie.sampling.conditioning import clip_pixel_values, encode_image, encode_prompt, vae_encode
from longvie.sampling.pipeline import LongViePipeline
from longvie.weights.checkpoint_keys import CheckpointKeyError, convert_dit_state_dict, to_original_dit_state_dict
from longvie.weights.loading import detect_layout, load_base_components, load_denoiser, load_transformer
from longvie.weights.original_keys import (
    clip_vision_config_from_state_dict,
    convert_vae_state_dict,
    to_original_vae_state_dict,
    umt5_config_from_state_dict,
    vae_config_from_state_dict,
)
from longvie.weights.original_layout import (
    dit_config_from_shapes,
    load_original_image_encoder,
    load_original_text_encoder,
)

ORIGINAL_NAMES = ["config.json", "diffusion_pytorch_model.safetensors.index.json", "models_t5_umt5-xxl-enc-bf16.pth",
                  "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth", "Wan2.1_VAE.pth",
                  "google/umt5-xxl"] + [f"diffusion_pytorch_model-{i:05d}-of-00007.safetensors" for i in range(1, 8)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "tiny_weight_layouts"
    original, longvie = write_tiny_original_checkpoints(root)
    return SimpleNamespace(original=original, diffusers=root / "Wan2.1-I2V-tiny-Diffusers", longvie=longvie)


def _denoiser_inputs(transformer, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = transformer.config
    b, f, h, w = 1, 3, 8, 14
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(latents=r(b, 16, f, h, w), timestep=torch.tensor([700.0]), text_embeds=r(b, 512, cfg.text_dim),
                image_embeds=r(b, 5, cfg.image_dim), image_latents=r(b, 20, f, h, w),
                dense_latents=r(b, 36, f, h, w), sparse_latents=r(b, 36, f, h, w),
                history_latents=r(b, 16, 2, h, w))


# --------------------------------------------------------------------------- tiny layouts, end to end
def test_original_tiny_layout_has_upstream_file_names(tiny):
    for name in ORIGINAL_NAMES:
        assert (tiny.original / name).exists(), name
    assert detect_layout(tiny.original) == "original"
    assert detect_layout(tiny.diffusers) == "diffusers"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_original_layout_loads_the_same_weights_as_diffusers(tiny, dtype):
    a, b = load_transformer(tiny.original, dtype), load_transformer(tiny.diffusers, dtype)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:  # same values, and the same fp32 exceptions as diffusers' from_pretrained
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    assert a.config.in_channels == 36 and a.config.image_dim == b.config.image_dim


def test_original_denoiser_output_equals_diffusers_layout(tiny):
    control, dit = tiny.longvie / "control.safetensors", tiny.longvie / "dit.safetensors"
    outs = []
    for base in (tiny.original, tiny.diffusers):
        denoiser = load_denoiser(base, control, dit, torch_dtype=torch.float32)
        with torch.no_grad():
            outs.append(denoiser(**_denoiser_inputs(denoiser.transformer)))
    assert outs[0].shape == (1, 16, 3, 8, 14)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_original_components_outputs_equal_diffusers_layout(tiny):
    orig = load_base_components(tiny.original, torch_dtype=torch.float32)
    diff = load_base_components(tiny.diffusers, torch_dtype=torch.float32)
    prompts = ["a horse gallops along the beach", "骑马"]
    e1 = encode_prompt(orig["tokenizer"], orig["text_encoder"], prompts, "cpu", torch.float32)
    e2 = encode_prompt(diff["tokenizer"], diff["text_encoder"], prompts, "cpu", torch.float32)
    assert e1.shape == (2, 512, 32) and e1.abs().sum() > 0
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)

    image = torch.rand(2, 3, 64, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1
    t1 = encode_image(orig["image_encoder"], clip_pixel_values(image, orig["image_processor"]), torch.float32)
    t2 = encode_image(diff["image_encoder"], clip_pixel_values(image, diff["image_processor"]), torch.float32)
    assert t1.shape == (2, 5, 32)
    torch.testing.assert_close(t1, t2, rtol=0, atol=0)

    video = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    z1, z2 = vae_encode(orig["vae"], video), vae_encode(diff["vae"], video)
    assert z1.shape == (1, 16, 2, 4, 4)
    torch.testing.assert_close(z1, z2, rtol=0, atol=0)
    assert orig["vae"].config.latents_mean == diff["vae"].config.latents_mean
    assert orig["vae"].config.latents_std == diff["vae"].config.latents_std


def test_original_pipeline_from_pretrained_matches_diffusers_layout(tiny):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    dense, sparse = (rng.integers(0, 255, (1, 32, 32, 3), dtype=np.uint8) for _ in range(2))
    frames = []
    for base in (tiny.original, tiny.diffusers):
        pipe = LongViePipeline.from_pretrained(base, tiny.longvie, torch_dtype=torch.float32, device="cpu")
        out = pipe(image, "a horse", dense, sparse, num_frames=1, height=32, width=32, num_inference_steps=1,
                   guidance_scale=1.0, progress=False)
        frames.append(out.frames)
    assert frames[0].shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(frames[0], frames[1])


# --------------------------------------------------------------------------- DiT and VAE tables vs diffusers
def test_original_dit_key_table_agrees_with_diffusers_converter(tiny):
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    reference = load_transformer(tiny.diffusers, torch.float32).state_dict()
    original = to_original_dit_state_dict(reference)
    theirs = convert_wan_transformer_to_diffusers(dict(original))
    ours = convert_dit_state_dict(original)
    assert set(theirs) == set(ours) == set(reference)
    for key in reference:
        assert torch.equal(theirs[key], reference[key]) and torch.equal(ours[key], reference[key]), key


def test_original_vae_table_agrees_with_diffusers_converter_on_the_release_structure():
    """diffusers' converter hard-codes the released VAE (num_res_blocks 2, dim_mult [1, 2, 4, 4]);
    our table is derived from the config. Same structure, narrow width: they must agree exactly."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                           temperal_downsample=[False, True, True])
    reference = vae.state_dict()
    original = to_original_vae_state_dict(reference, num_res_blocks=2)
    assert "decoder.upsamples.4.shortcut.weight" in original and "decoder.upsamples.11.resample.1.weight" in original
    theirs = convert_wan_vae_to_diffusers(dict(original))
    assert set(theirs) == set(reference)
    for key in reference:
        assert torch.equal(theirs[key], reference[key]), key
    config = vae_config_from_state_dict(original)
    assert (config["base_dim"], config["dim_mult"], config["num_res_blocks"], config["temperal_downsample"]) == \
        (4, [1, 2, 4, 4], 2, [False, True, True])
    ours = convert_vae_state_dict(original, reference.keys(), 2)
    assert all(torch.equal(ours[k], reference[k]) for k in reference)


def test_original_dit_config_of_the_14b_release():
    """The 14B I2V shapes (meta tensors) + the release's config.json give diffusers' 14B config."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(in_channels=36, image_dim=1280, added_kv_proj_dim=5120)
    shapes = {k: tuple(v.shape) for k, v in to_original_dit_state_dict(model.state_dict()).items()}
    release_config = {"_class_name": "WanModel", "model_type": "i2v", "dim": 5120, "eps": 1e-06, "ffn_dim": 13824,
                      "freq_dim": 256, "in_dim": 36, "num_heads": 40, "num_layers": 40, "out_dim": 16,
                      "text_len": 512}
    # transformer/config.json of Wan-AI/Wan2.1-I2V-14B-480P-Diffusers
    expected = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
                    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120,
                    rope_max_seq_len=1024)
    assert dit_config_from_shapes(shapes, release_config, "14B") == expected
    assert dit_config_from_shapes(shapes, None, "14B") == expected  # heads from Wan's 128-wide heads


def test_original_umt5_xxl_and_vit_h_configs_from_shapes():
    meta = lambda *s: torch.empty(*s, device="meta")  # noqa: E731
    t5 = {"token_embedding.weight": meta(256384, 4096), "blocks.0.attn.q.weight": meta(4096, 4096),
          "blocks.0.ffn.fc1.weight": meta(10240, 4096), "blocks.0.pos_embedding.embedding.weight": meta(32, 64),
          **{f"blocks.{i}.norm1.weight": meta(4096) for i in range(24)}}
    config = umt5_config_from_state_dict(t5)
    assert (config["vocab_size"], config["d_model"], config["num_heads"], config["d_kv"], config["d_ff"],
            config["num_layers"], config["relative_attention_num_buckets"],
            config["relative_attention_max_distance"]) == (256384, 4096, 64, 64, 10240, 24, 32, 128)
    clip = {"visual.patch_embedding.weight": meta(1280, 3, 14, 14), "visual.pos_embedding": meta(1, 257, 1280),
            "visual.head": meta(1280, 1024), **{f"visual.transformer.{i}.mlp.0.weight": meta(5120, 1280)
                                                for i in range(32)}}
    config = clip_vision_config_from_state_dict(clip)
    assert (config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"], config["image_size"],
            config["patch_size"], config["intermediate_size"], config["hidden_act"]) == \
        (1280, 16, 32, 224, 14, 5120, "gelu")


# --------------------------------------------------------------------------- umT5 vs an independent reference
def _rms(x, weight, eps=1e-6):
    return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _relative_buckets(length, num_buckets, max_distance):
    """Bidirectional T5 buckets of (key - query): half the buckets per sign, exact below
    num_buckets/4, log-spaced up to max_distance (Wan's T5RelativeEmbedding)."""
    rel = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    half = num_buckets // 2
    exact = half // 2
    sign = (rel > 0).long() * half
    dist = rel.abs()
    log_bucket = exact + (torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                          * (half - exact)).long()
    return sign + torch.where(dist < exact, dist, log_bucket.clamp(max=half - 1))


def _wan_umt5_reference(sd, ids, mask, heads, max_distance=128):
    x = sd["token_embedding.weight"][ids]
    batch, length, _ = x.shape
    buckets = _relative_buckets(length, sd["blocks.0.pos_embedding.embedding.weight"].shape[0], max_distance)
    layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(layers):
        p = lambda n: sd[f"blocks.{i}.{n}"]  # noqa: E731
        h = _rms(x, p("norm1.weight"))
        q, k, v = ((h @ p(f"attn.{n}.weight").T).view(batch, length, heads, -1) for n in "qkv")
        logits = torch.einsum("bihd,bjhd->bhij", q, k)  # T5: no 1/sqrt(d) scaling
        logits = logits + p("pos_embedding.embedding.weight")[buckets].permute(2, 0, 1)[None]
        logits = logits.masked_fill(mask[:, None, None, :] == 0, torch.finfo(logits.dtype).min)
        out = torch.einsum("bhij,bjhd->bihd", logits.softmax(-1), v).reshape(batch, length, -1)
        x = x + out @ p("attn.o.weight").T
        h = _rms(x, p("norm2.weight"))
        gate = F.gelu(h @ p("ffn.gate.0.weight").T, approximate="tanh")
        x = x + ((h @ p("ffn.fc1.weight").T) * gate) @ p("ffn.fc2.weight").T
    return _rms(x, sd["norm.weight"])


def test_original_umt5_conversion_matches_reference_forward(tmp_path):
    g = torch.Generator().manual_seed(0)
    d, heads, d_kv, d_ff, layers, buckets, vocab = 32, 4, 8, 48, 2, 32, 50
    r = lambda *s: torch.randn(*s, generator=g) * 0.3  # noqa: E731
    sd = {"token_embedding.weight": r(vocab, d), "norm.weight": 1 + r(d)}
    for i in range(layers):
        sd.update({f"blocks.{i}.norm1.weight": 1 + r(d), f"blocks.{i}.norm2.weight": 1 + r(d),
                   f"blocks.{i}.pos_embedding.embedding.weight": r(buckets, heads) * 3,
                   f"blocks.{i}.ffn.gate.0.weight": r(d_ff, d), f"blocks.{i}.ffn.fc1.weight": r(d_ff, d),
                   f"blocks.{i}.ffn.fc2.weight": r(d, d_ff), f"blocks.{i}.attn.o.weight": r(d, heads * d_kv),
                   **{f"blocks.{i}.attn.{n}.weight": r(heads * d_kv, d) for n in "qkv"}})
    torch.save(sd, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    model = load_original_text_encoder(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth", torch.float32)
    assert model.config.relative_attention_max_distance == 128  # Wan's default, no override given

    length = 150  # beyond max_distance, so the log buckets and their clamp are exercised
    ids = torch.randint(2, vocab, (2, length), generator=g)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, 90:] = 0
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).last_hidden_state
    reference = _wan_umt5_reference(sd, ids, mask, heads)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- CLIP vs an independent reference
def _wan_clip_reference(sd, pixels, heads, num_blocks):
    """open-clip ViT as Wan runs it: patch conv (no bias), [cls; patches] + pos, pre_norm, pre-norm
    blocks with a fused qkv projection and exact GELU; returns the tokens after ``num_blocks`` blocks."""
    ln = lambda x, n: F.layer_norm(x, x.shape[-1:], sd[f"{n}.weight"], sd[f"{n}.bias"], 1e-5)  # noqa: E731
    patch = sd["visual.patch_embedding.weight"]
    x = F.conv2d(pixels, patch, stride=patch.shape[-1]).flatten(2).transpose(1, 2)
    batch, _, width = x.shape
    x = torch.cat([sd["visual.cls_embedding"].expand(batch, -1, -1), x], dim=1) + sd["visual.pos_embedding"]
    x = ln(x, "visual.pre_norm")
    for i in range(num_blocks):
        n = f"visual.transformer.{i}"
        h = ln(x, f"{n}.norm1")
        qkv = (h @ sd[f"{n}.attn.to_qkv.weight"].T + sd[f"{n}.attn.to_qkv.bias"]).view(batch, -1, 3, heads,
                                                                                        width // heads)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        attn = ((q @ k.transpose(-1, -2)) / math.sqrt(width // heads)).softmax(-1) @ v
        x = x + attn.transpose(1, 2).reshape(batch, -1, width) @ sd[f"{n}.attn.proj.weight"].T \
            + sd[f"{n}.attn.proj.bias"]
        h = F.gelu(ln(x, f"{n}.norm2") @ sd[f"{n}.mlp.0.weight"].T + sd[f"{n}.mlp.0.bias"])
        x = x + h @ sd[f"{n}.mlp.2.weight"].T + sd[f"{n}.mlp.2.bias"]
    return x


def _random_clip_state_dict(width=64, layers=3, patch=14, grid=2, mlp=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    sd = {"visual.patch_embedding.weight": r(width, 3, patch, patch), "visual.cls_embedding": r(1, 1, width),
          "visual.pos_embedding": r(1, 1 + grid * grid, width), "visual.pre_norm.weight": 1 + r(width),
          "visual.pre_norm.bias": r(width), "visual.post_norm.weight": 1 + r(width),
          "visual.post_norm.bias": r(width), "visual.head": r(width, 16),
          # text tower and contrastive scale: present in the release file, ignored on purpose
          "textual.token_embedding.weight": r(10, 8), "textual.blocks.0.attn.q.weight": r(8, 8),
          "log_scale": torch.tensor(4.6)}
    for i in range(layers):
        n = f"visual.transformer.{i}"
        sd.update({f"{n}.norm1.weight": 1 + r(width), f"{n}.norm1.bias": r(width),
                   f"{n}.attn.to_qkv.weight": r(3 * width, width), f"{n}.attn.to_qkv.bias": r(3 * width),
                   f"{n}.attn.proj.weight": r(width, width), f"{n}.attn.proj.bias": r(width),
                   f"{n}.norm2.weight": 1 + r(width), f"{n}.norm2.bias": r(width),
                   f"{n}.mlp.0.weight": r(mlp, width), f"{n}.mlp.0.bias": r(mlp),
                   f"{n}.mlp.2.weight": r(width, mlp), f"{n}.mlp.2.bias": r(width)})
    return sd


def test_original_clip_conversion_matches_reference_forward(tmp_path):
    sd = _random_clip_state_dict()
    path = tmp_path / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
    torch.save(sd, path)
    model, processor = load_original_image_encoder(path, torch.float32, num_attention_heads=4)
    assert model.config.image_size == 28 and processor.crop_size["height"] == 28
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    # Wan uses the tokens after all but the last block (use_31_block): our encode_image's hidden_states[-2]
    torch.testing.assert_close(encode_image(model, pixels, torch.float32), _wan_clip_reference(sd, pixels, 4, 2),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.hidden_states[-1], _wan_clip_reference(sd, pixels, 4, 3), rtol=1e-4, atol=1e-4)
    cls = F.layer_norm(_wan_clip_reference(sd, pixels, 4, 3)[:, 0], (64,), sd["visual.post_norm.weight"],
                       sd["visual.post_norm.bias"], 1e-5)
    torch.testing.assert_close(out.pooler_output, cls, rtol=1e-4, atol=1e-4)


def test_original_clip_head_count_must_be_known(tmp_path):
    path = tmp_path / "clip.pth"
    torch.save(_random_clip_state_dict(), path)
    with pytest.raises(CheckpointKeyError, match="64-wide CLIP vision tower is not Wan2.1's ViT-H/14"):
        load_original_image_encoder(path, torch.float32)


def test_original_clip_unknown_visual_key_is_reported(tmp_path):
    sd = _random_clip_state_dict()
    sd["visual.transformer.0.attn.extra.weight"] = torch.zeros(1)
    path = tmp_path / "clip.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointKeyError, match=r"clip.pth: 1 unknown key\(s\):\n  visual.transformer.0.attn.extra"):
        load_original_image_encoder(path, torch.float32, num_attention_heads=4)
