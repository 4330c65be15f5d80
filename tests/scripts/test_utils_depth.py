"""Depth extraction: Depth Anything V2 and Video Depth Anything backends (tiny random weights),
official VDA checkpoint keys, and the depth .npy -> depth_XX.mp4 step."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `utils` is a top-level folder of the repository
    sys.path.insert(0, str(REPO))

from longvie.controls.depth_estimators import DepthAnythingV2Estimator, build_depth_estimator  # noqa: E402
from longvie.controls.primitives import normalize_depth  # noqa: E402
from longvie.controls.video_depth_anything import (  # noqa: E402
    ARCHITECTURES,
    VDAArchitecture,
    architecture_from_state_dict,
    infer_video_depth,
    load_official_checkpoint,
    network_input_size,
)
from longvie.media.video_io import read_video, write_video  # noqa: E402
from utils import depth_npy2mp4, get_depth  # noqa: E402

TINY_VDA = VDAArchitecture(hidden_size=32, num_layers=4, num_heads=2, features=32, out_channels=(16, 32, 32, 64),
                           layer_indices=(0, 1, 2, 3), image_size=56)


# ------------------------------------------------------------------------------------------ helpers


def tiny_depth_anything_v2():
    """A random-weight Depth Anything V2 (tiny Dinov2 backbone) and a matching image processor."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=4, patch_size=14,
                            image_size=56, out_indices=[1, 2, 3, 4], reshape_hidden_states=False, apply_layernorm=True)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[16, 32, 32, 64],
                                 fusion_hidden_size=32, head_hidden_size=8)
    processor = DPTImageProcessor(do_resize=True, size={"height": 28, "width": 28}, keep_aspect_ratio=True,
                                  ensure_multiple_of=14, resample=3, do_normalize=True,
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return DepthAnythingForDepthEstimation(config).eval(), processor


def official_vda_state_dict(arch: VDAArchitecture, seed: int = 0) -> dict:
    """Random weights under the official Video Depth Anything key names (utils/models/vda upstream)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen) * 0.05

    dim, feat, (c0, c1, c2, c3) = arch.hidden_size, arch.features, arch.out_channels
    sd = {"pretrained.cls_token": rand(1, 1, dim), "pretrained.mask_token": rand(1, dim),
          "pretrained.pos_embed": rand(1, (arch.image_size // 14) ** 2 + 1, dim),
          "pretrained.patch_embed.proj.weight": rand(dim, 3, 14, 14), "pretrained.patch_embed.proj.bias": rand(dim),
          "pretrained.norm.weight": 1 + rand(dim), "pretrained.norm.bias": rand(dim)}
    for i in range(arch.num_layers):
        block = f"pretrained.blocks.{i}."
        sd.update({block + "norm1.weight": 1 + rand(dim), block + "norm1.bias": rand(dim),
                   block + "norm2.weight": 1 + rand(dim), block + "norm2.bias": rand(dim),
                   block + "attn.qkv.weight": rand(3 * dim, dim), block + "attn.qkv.bias": rand(3 * dim),
                   block + "attn.proj.weight": rand(dim, dim), block + "attn.proj.bias": rand(dim),
                   block + "ls1.gamma": 1 + rand(dim), block + "ls2.gamma": 1 + rand(dim),
                   block + "mlp.fc1.weight": rand(4 * dim, dim), block + "mlp.fc1.bias": rand(4 * dim),
                   block + "mlp.fc2.weight": rand(dim, 4 * dim), block + "mlp.fc2.bias": rand(dim)})
    for i, channels in enumerate((c0, c1, c2, c3)):
        sd[f"head.projects.{i}.weight"], sd[f"head.projects.{i}.bias"] = rand(channels, dim, 1, 1), rand(channels)
        sd[f"head.scratch.layer{i + 1}_rn.weight"] = rand(feat, channels, 3, 3)
    for i, (channels, kernel) in {0: (c0, 4), 1: (c1, 2), 3: (c3, 3)}.items():
        sd[f"head.resize_layers.{i}.weight"] = rand(channels, channels, kernel, kernel)
        sd[f"head.resize_layers.{i}.bias"] = rand(channels)
    for k in range(1, 5):
        net = f"head.scratch.refinenet{k}."
        sd[net + "out_conv.weight"], sd[net + "out_conv.bias"] = rand(feat, feat, 1, 1), rand(feat)
        for unit in (1, 2):
            for conv in (1, 2):
                sd[f"{net}resConfUnit{unit}.conv{conv}.weight"] = rand(feat, feat, 3, 3)
                sd[f"{net}resConfUnit{unit}.conv{conv}.bias"] = rand(feat)
    sd.update({"head.scratch.output_conv1.weight": rand(feat // 2, feat, 3, 3),
               "head.scratch.output_conv1.bias": rand(feat // 2),
               "head.scratch.output_conv2.0.weight": rand(32, feat // 2, 3, 3), "head.scratch.output_conv2.0.bias": rand(32),
               "head.scratch.output_conv2.2.weight": rand(1, 32, 1, 1), "head.scratch.output_conv2.2.bias": rand(1)})
    for m, channels in enumerate((c2, c3, feat, feat)):
        tt = f"head.motion_modules.{m}.temporal_transformer."
        sd.update({tt + "norm.weight": 1 + rand(channels), tt + "norm.bias": rand(channels),
                   tt + "proj_in.weight": rand(channels, channels), tt + "proj_in.bias": rand(channels),
                   tt + "proj_out.weight": rand(channels, channels), tt + "proj_out.bias": rand(channels)})
        block = tt + "transformer_blocks.0."
        for j in (0, 1):
            att = f"{block}attention_blocks.{j}."
            sd.update({att + "to_q.weight": rand(channels, channels), att + "to_k.weight": rand(channels, channels),
                       att + "to_v.weight": rand(channels, channels), att + "to_out.0.weight": rand(channels, channels),
                       att + "to_out.0.bias": rand(channels), att + "pos_encoder.pe": torch.zeros(1, 32, channels),
                       f"{block}norms.{j}.weight": 1 + rand(channels), f"{block}norms.{j}.bias": rand(channels)})
        sd.update({block + "ff.net.0.proj.weight": rand(8 * channels, channels), block + "ff.net.0.proj.bias": rand(8 * channels),
                   block + "ff.net.2.weight": rand(channels, 4 * channels), block + "ff.net.2.bias": rand(channels),
                   block + "ff_norm.weight": 1 + rand(channels), block + "ff_norm.bias": rand(channels)})
    return sd


def random_frames(num_frames, height=30, width=44, seed=0):
    return (np.random.default_rng(seed).random((num_frames, height, width, 3)) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ Depth Anything V2


def test_depth_anything_v2_estimator_shapes():
    model, processor = tiny_depth_anything_v2()
    estimator = DepthAnythingV2Estimator(model, processor, batch_size=4)
    depth = estimator(random_frames(6))
    assert depth.shape == (6, 30, 44) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and (depth >= 0).all()


def test_depth_anything_v2_from_local_dir_and_clear_error_when_missing(tmp_path):
    model, processor = tiny_depth_anything_v2()
    model.save_pretrained(tmp_path / "da")
    processor.save_pretrained(tmp_path / "da")
    estimator = build_depth_estimator("depth-anything-v2", str(tmp_path / "da"), local_files_only=True, device="cpu")
    assert estimator(random_frames(2)).shape == (2, 30, 44)
    with pytest.raises(RuntimeError, match="local directory"):
        build_depth_estimator("auto", str(tmp_path / "nowhere"), local_files_only=True, device="cpu")
    # issue 10: video-depth-anything without a checkpoint now looks in the hub cache (no fallback)
    with pytest.raises(RuntimeError, match="--vda-checkpoint"):
        build_depth_estimator("video-depth-anything", local_files_only=True)


def test_depth_offline_fails_fast_with_hints(tmp_path, monkeypatch, capsys):
    """HF_HUB_OFFLINE=1, nothing cached: VDA, then the Depth Anything V2 fallback, fail in seconds."""
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    started = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        build_depth_estimator("auto", device="cpu")
    assert time.monotonic() - started < 15
    message = str(err.value)
    assert "--local-files" in message and "Video-Depth-Anything-Large" in message
    assert "--depth-npy" not in message  # only a command that has the option names it (issue 19)
    assert "flickers more" in capsys.readouterr().out  # the fallback was announced
    with pytest.raises(RuntimeError, match="pass --depth-npy DEPTH.npy"):
        build_depth_estimator("auto", device="cpu", precomputed="pass --depth-npy DEPTH.npy")


def test_vda_default_comes_from_the_hub_cache(tmp_path, monkeypatch):
    """auto loads video_depth_anything_vitl.pth found through huggingface_hub (offline: cache only)."""
    from longvie.controls import depth_estimators

    calls = []
    loaded = []
    monkeypatch.setattr(depth_estimators.VideoDepthAnythingEstimator, "from_checkpoint",
                        classmethod(lambda cls, path, device=None, input_size=518: loaded.append(Path(path)) or "vda"))

    def fake_download(repo_id, filename, local_files_only=False):
        calls.append((repo_id, filename, local_files_only))
        return str(tmp_path / filename)

    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert depth_estimators.build_depth_estimator("auto", device="cpu") == "vda"
    assert loaded == [tmp_path / "video_depth_anything_vitl.pth"]
    assert calls == [("depth-anything/Video-Depth-Anything-Large", "video_depth_anything_vitl.pth", True)]


# ------------------------------------------------------------------------------------ Video Depth Anything


def test_vda_loads_official_key_names_strictly():
    state_dict = official_vda_state_dict(TINY_VDA)
    model = load_official_checkpoint(state_dict, TINY_VDA)
    own = model.state_dict()
    qkv = state_dict["pretrained.blocks.1.attn.qkv.weight"]
    layer = "depth_anything.backbone.encoder.layer.1.attention."
    query = next(k for k in own if k.startswith(layer) and ("q_proj.weight" in k or "query.weight" in k))
    torch.testing.assert_close(own[query], qkv[:32])
    torch.testing.assert_close(own["depth_anything.neck.fusion_stage.layers.0.projection.weight"],
                               state_dict["head.scratch.refinenet4.out_conv.weight"])
    torch.testing.assert_close(own["motion_modules.2.temporal_transformer.proj_in.weight"],
                               state_dict["head.motion_modules.2.temporal_transformer.proj_in.weight"])
    video = torch.randn(1, 3, 3, 56, 84)
    assert model(video).shape == (1, 3, 56, 84)

    with pytest.raises(KeyError, match="no counterpart"):
        load_official_checkpoint({**state_dict, "head.extra.weight": torch.zeros(1)}, TINY_VDA)
    incomplete = {k: v for k, v in state_dict.items() if k != "head.scratch.output_conv1.weight"}
    with pytest.raises(KeyError, match="lacks"):
        load_official_checkpoint(incomplete, TINY_VDA)


def test_vda_checkpoint_file_and_estimator_errors(tmp_path):
    from longvie.controls.depth_estimators import VideoDepthAnythingEstimator

    torch.save(official_vda_state_dict(TINY_VDA), tmp_path / "tiny.pth")
    estimator = VideoDepthAnythingEstimator(load_official_checkpoint(tmp_path / "tiny.pth", TINY_VDA), "cpu", input_size=28)
    assert estimator(random_frames(5)).shape == (5, 30, 44)
    with pytest.raises(FileNotFoundError, match="Video-Depth-Anything-Large"):
        VideoDepthAnythingEstimator.from_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "metric_video_depth_anything_vits.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="not disparity"):
        VideoDepthAnythingEstimator.from_checkpoint(tmp_path / "metric_video_depth_anything_vits.pth")


def test_vda_real_vits_sizes_load():
    """The official vits layout (24.8M + temporal parameters) loads into our vits architecture."""
    state_dict = official_vda_state_dict(ARCHITECTURES["vits"])
    model = load_official_checkpoint(state_dict)  # architecture recognised from the weights
    assert model.architecture.hidden_size == 384 and model.architecture.image_size == 518


def test_vda_architecture_from_checkpoint_and_input_size():
    vits = architecture_from_state_dict({"pretrained.pos_embed": torch.zeros(1, 37 * 37 + 1, 384)})
    assert vits.layer_indices == ARCHITECTURES["vits"].layer_indices and vits.image_size == 518
    assert architecture_from_state_dict({"pretrained.pos_embed": torch.zeros(1, 1370, 1024)}).features == 256
    assert network_input_size(480, 832) == (518, 896)
    assert network_input_size(1080, 1920) == (518, 924)


def test_vda_whole_video_inference_shape():
    model = load_official_checkpoint(official_vda_state_dict(TINY_VDA), TINY_VDA)
    depth = infer_video_depth(model, random_frames(40), input_size=28)
    assert depth.shape == (40, 30, 44) and depth.dtype == np.float32 and np.isfinite(depth).all()


class ScaledRedChannel(torch.nn.Module):
    """Fake VDA: disparity = (red channel + 3) times a factor that changes with every window."""

    architecture = TINY_VDA

    def __init__(self, factors):
        super().__init__()
        self.factors, self.calls = factors, 0

    def forward(self, video):
        factor = self.factors[self.calls % len(self.factors)]
        self.calls += 1
        return (video[:, :, 0] + 3.0) * factor


def test_vda_windows_are_aligned_to_one_scale():
    frames = random_frames(75, seed=1)  # 4 windows
    reference = infer_video_depth(ScaledRedChannel([1.0]), frames, input_size=28)
    stitched = infer_video_depth(ScaledRedChannel([1.0, 2.5, 0.5, 4.0]), frames, input_size=28)
    assert stitched.shape == (75, 30, 44)
    np.testing.assert_allclose(stitched, reference, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ npy -> mp4


def test_depth_npy2mp4_global_normalisation_and_remainder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    disparity = (rng.random((170, 32, 48)) * np.linspace(1, 3, 170)[:, None, None]).astype(np.float32)
    np.save(tmp_path / "depth.npy", disparity)
    assert depth_npy2mp4.main([str(tmp_path / "depth.npy"), str(tmp_path / "out")]) == 0
    assert "last 9 frame(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["depth_00.mp4", "depth_01.mp4",
                                                                    "longvie_output.json"]

    expected = normalize_depth(disparity[:161])  # one normalisation over the frames the clips use
    second = read_video(tmp_path / "out" / "depth_01.mp4")
    assert second.shape == (81, 32, 48, 3)
    assert np.abs(second[..., 0].astype(int) - second[..., 2]).max() <= 2  # grey
    error = np.abs(second[..., 0].astype(int) - expected[80:161])
    assert error.mean() < 4  # H.264 at crf 18 on noise


def test_constant_depth_and_short_depth(tmp_path, capsys):
    np.save(tmp_path / "flat.npy", np.ones((81, 16, 16), np.float32))
    assert depth_npy2mp4.main([str(tmp_path / "flat.npy"), str(tmp_path / "out")]) == 0
    assert "no variation" in capsys.readouterr().out
    assert abs(int(read_video(tmp_path / "out" / "depth_00.mp4")[..., 0].mean()) - 128) <= 2

    np.save(tmp_path / "short.npy", np.ones((30, 16, 16), np.float32))
    assert depth_npy2mp4.main([str(tmp_path / "short.npy"), str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err
    assert "short.npy" in err and "30 frames" in err and "81" in err
    assert not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------------------ get_depth.py


def test_get_depth_script_with_tiny_model(tmp_path, capsys):
    model, processor = tiny_depth_anything_v2()
    model.save_pretrained(tmp_path / "da")
    processor.save_pretrained(tmp_path / "da")
    write_video(tmp_path / "drive.mp4", random_frames(85, 32, 48))
    args = [str(tmp_path / "drive.mp4"), str(tmp_path / "depth.npy"), "--model", str(tmp_path / "da"),
            "--local-files", "--device", "cpu", "--keep-size"]
    assert get_depth.main(args) == 0
    depth = np.load(tmp_path / "depth.npy")
    assert depth.shape == (81, 32, 48) and depth.dtype == np.float32
    assert "last 4 frame(s)" in capsys.readouterr().out


def test_get_depth_reports_bad_videos(tmp_path, capsys):
    write_video(tmp_path / "short.mp4", random_frames(20, 32, 48))
    assert get_depth.main([str(tmp_path / "short.mp4"), str(tmp_path / "d.npy")]) == 1
    err = capsys.readouterr().err
    assert "short.mp4" in err and "20 frames" in err and "81" in err

    (tmp_path / "broken.mp4").write_text("not a video")
    assert get_depth.main([str(tmp_path / "broken.mp4"), str(tmp_path / "d.npy")]) == 1
    assert "broken.mp4" in capsys.readouterr().err
    assert not (tmp_path / "d.npy").exists()


def test_prepare_controls_with_depth_model(tmp_path):
    from utils import prepare_controls

    model, processor = tiny_depth_anything_v2()
    model.save_pretrained(tmp_path / "da")
    processor.save_pretrained(tmp_path / "da")
    write_video(tmp_path / "drive.mp4", random_frames(81, 32, 48))
    args = [str(tmp_path / "drive.mp4"), str(tmp_path / "cond"), "--model", str(tmp_path / "da"), "--local-files",
            "--device", "cpu", "--grid", "8", "--save-depth-npy", "--keep-size"]
    assert prepare_controls.main(args) == 0
    assert np.load(tmp_path / "cond" / "depth.npy").shape == (81, 32, 48)
    assert read_video(tmp_path / "cond" / "depth_00.mp4").shape == (81, 32, 48, 3)
    assert (tmp_path / "cond" / "track_00.mp4").is_file() and (tmp_path / "cond" / "cond.json").is_file()
