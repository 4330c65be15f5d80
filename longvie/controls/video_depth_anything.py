"""Video Depth Anything (temporally consistent relative depth) on transformers building blocks.

Video Depth Anything (Chen et al., arXiv 2501.12375; github DepthAnything/Video-Depth-Anything,
vendored by Vchitect/LongVie as ``utils/models/vda``) is Depth Anything V2 — a DINOv2 encoder and a
DPT head — with four temporal attention modules inserted into the head. Here the encoder, the
reassemble/fusion blocks and the output convolutions are transformers'
``DepthAnythingForDepthEstimation``; only the temporal modules are our own. The official
``video_depth_anything_{vits,vitb,vitl}.pth`` checkpoints load by their own key names through
:func:`convert_official_state_dict` (upstream LongVie uses vitl).

Shapes: a model call takes normalised frames (B, T, 3, H, W) with H, W multiples of 14 and returns
relative disparity (B, T, H, W) (large = near). :func:`infer_video_depth` runs a whole video of any
length through overlapping 32-frame windows, as the official ``infer_video_depth`` does.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Inference schedule of the official implementation (its comment: "do not change"): windows of 32
# frames advancing by 22; the first 10 inputs of a window are key frames of the previous window
# (its frames 0 and 12 plus its last 8), which anchor a least-squares scale/shift alignment (on 2
# frames) and a linear cross-fade (over the 8 shared frames).
WINDOW = 32
OVERLAP = 10
KEYFRAMES = (0, 12, 24, 25, 26, 27, 28, 29, 30, 31)
CROSSFADE = 8
ALIGN_FRAMES = OVERLAP - CROSSFADE

PATCH = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VDAArchitecture:
    """Sizes of a Video Depth Anything model (official ``model_configs`` + DINOv2 sizes)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    features: int  # DPT fusion width
    out_channels: tuple[int, int, int, int]  # DPT reassemble widths
    layer_indices: tuple[int, int, int, int]  # encoder blocks (0-based) feeding the head
    image_size: int = 518  # sets the stored position-embedding grid (37 x 37 patches)
    num_frames: int = WINDOW  # temporal position-encoding length
    temporal_heads: int = 8
    norm_groups: int = 32

    def depth_anything_config(self):
        """The transformers ``DepthAnythingConfig`` of the image part (encoder + DPT head)."""
        from transformers import DepthAnythingConfig, Dinov2Config

        backbone = Dinov2Config(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            mlp_ratio=4,
            patch_size=PATCH,
            image_size=self.image_size,
            layerscale_value=1.0,
            # hidden_states[0] is the embedding output, so block i is stage i + 1
            out_indices=[i + 1 for i in self.layer_indices],
            reshape_hidden_states=False,
            apply_layernorm=True,
        )
        return DepthAnythingConfig(
            backbone_config=backbone,
            patch_size=PATCH,
            reassemble_hidden_size=self.hidden_size,
            reassemble_factors=[4, 2, 1, 0.5],
            neck_hidden_sizes=list(self.out_channels),
            fusion_hidden_size=self.features,
            head_hidden_size=32,
            depth_estimation_type="relative",
        )


ARCHITECTURES = {
    "vits": VDAArchitecture(384, 12, 6, 64, (48, 96, 192, 384), (2, 5, 8, 11)),
    "vitb": VDAArchitecture(768, 12, 12, 128, (96, 192, 384, 768), (2, 5, 8, 11)),
    "vitl": VDAArchitecture(1024, 24, 16, 256, (256, 512, 1024, 1024), (4, 11, 17, 23)),
}


# --------------------------------------------------------------------------------------------------
# Temporal modules (AnimateDiff-style motion modules, named like the official checkpoint)
# --------------------------------------------------------------------------------------------------


class SinusoidalPositions(nn.Module):
    """Absolute sin/cos frame-position encoding added to the tokens (``pos_encoder.pe``)."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(1, max_len, dim)
        table[0, :, 0::2] = torch.sin(position * frequency)
        table[0, :, 1::2] = torch.cos(position * frequency)
        self.register_buffer("pe", table)  # persistent: the official checkpoint stores it

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, T, C) -> tokens + pe[:T]."""
        if tokens.shape[1] > self.pe.shape[1]:
            raise ValueError(f"{tokens.shape[1]} frames exceed the temporal encoding length {self.pe.shape[1]}")
        return tokens + self.pe[:, : tokens.shape[1]].to(tokens.dtype)


class TemporalAttention(nn.Module):
    """Self-attention across frames, independently at every spatial position."""

    def __init__(self, dim: int, heads: int, max_len: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.pos_encoder = SinusoidalPositions(dim, max_len)

    def forward(self, tokens: torch.Tensor, num_frames: int) -> torch.Tensor:
        """tokens (B*T, S, C) with frames outermost per batch item -> (B*T, S, C)."""
        frames_batch, spatial, channels = tokens.shape
        batch = frames_batch // num_frames
        # (B*T, S, C) -> (B*S, T, C): one sequence of T frames per spatial position
        seq = tokens.view(batch, num_frames, spatial, channels).transpose(1, 2).reshape(-1, num_frames, channels)
        seq = self.pos_encoder(seq)

        def split_heads(x):
            return x.view(x.shape[0], num_frames, self.heads, -1).transpose(1, 2)

        attended = F.scaled_dot_product_attention(split_heads(self.to_q(seq)), split_heads(self.to_k(seq)),
                                                  split_heads(self.to_v(seq)))
        attended = attended.transpose(1, 2).reshape(-1, num_frames, channels)
        attended = self.to_out[1](self.to_out[0](attended))
        return attended.view(batch, spatial, num_frames, channels).transpose(1, 2).reshape(frames_batch, spatial, channels)


class GatedGELU(nn.Module):
    """GEGLU: a projection to twice the width, the second half gating the first through GELU."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class GEGLUFeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GatedGELU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TemporalTransformerBlock(nn.Module):
    """Two pre-norm temporal self-attentions, then a pre-norm GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, max_len: int, num_attention_blocks: int = 2):
        super().__init__()
        self.attention_blocks = nn.ModuleList(TemporalAttention(dim, heads, max_len) for _ in range(num_attention_blocks))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_attention_blocks))
        self.ff = GEGLUFeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, num_frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            tokens = tokens + attention(norm(tokens), num_frames)
        return tokens + self.ff(self.ff_norm(tokens))


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, max_len: int, norm_groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, max_len)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, maps: torch.Tensor, num_frames: int) -> torch.Tensor:
        """maps (B*T, C, H, W), frames outermost per batch item -> same shape (residual)."""
        frames_batch, channels, height, width = maps.shape
        tokens = self.norm(maps).permute(0, 2, 3, 1).reshape(frames_batch, height * width, channels)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, num_frames)
        tokens = self.proj_out(tokens)
        return maps + tokens.view(frames_batch, height, width, channels).permute(0, 3, 1, 2)


class TemporalModule(nn.Module):
    def __init__(self, channels: int, heads: int, max_len: int, norm_groups: int):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, max_len, norm_groups)

    def forward(self, maps: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.temporal_transformer(maps, num_frames)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class VideoDepthAnything(nn.Module):
    """Depth Anything V2 (transformers) + 4 temporal modules in the DPT head.

    Temporal modules sit after the reassembly of the two deepest feature maps and after the first
    two fusion stages, as in the official ``DPTHeadTemporal``.
    """

    def __init__(self, architecture: VDAArchitecture):
        super().__init__()
        from transformers import DepthAnythingForDepthEstimation

        self.architecture = architecture
        self.depth_anything = DepthAnythingForDepthEstimation(architecture.depth_anything_config())
        widths = (architecture.out_channels[2], architecture.out_channels[3], architecture.features, architecture.features)
        self.motion_modules = nn.ModuleList(
            TemporalModule(width, architecture.temporal_heads, architecture.num_frames, architecture.norm_groups)
            for width in widths
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, T, 3, H, W), ImageNet-normalised, H and W multiples of 14 -> disparity (B, T, H, W)."""
        batch, num_frames, _, height, width = video.shape
        patch_h, patch_w = height // PATCH, width // PATCH
        neck, fusion = self.depth_anything.neck, self.depth_anything.neck.fusion_stage.layers
        tokens = self.depth_anything.backbone(video.flatten(0, 1)).feature_maps
        maps = neck.reassemble_stage(list(tokens), patch_h, patch_w)
        maps[2] = self.motion_modules[0](maps[2], num_frames)
        maps[3] = self.motion_modules[1](maps[3], num_frames)
        maps = [conv(m) for conv, m in zip(neck.convs, maps)]
        # fusion layers 0..3 are the official refinenet4..refinenet1 (deepest first)
        fused = fusion[0](maps[3], size=maps[2].shape[2:])
        fused = self.motion_modules[2](fused, num_frames)
        fused = fusion[1](fused, maps[2], size=maps[1].shape[2:])
        fused = self.motion_modules[3](fused, num_frames)
        fused = fusion[2](fused, maps[1], size=maps[0].shape[2:])
        fused = fusion[3](fused, maps[0])
        depth = self.depth_anything.head([fused], patch_h, patch_w)  # (B*T, 14 ph, 14 pw), ReLU'd
        depth = F.interpolate(depth[:, None], size=(height, width), mode="bilinear", align_corners=True)
        return F.relu(depth)[:, 0].view(batch, num_frames, height, width)


# --------------------------------------------------------------------------------------------------
# Official checkpoint keys
# --------------------------------------------------------------------------------------------------

# Official DPT head names -> transformers DepthAnything names (module paths without the parameter).
_HEAD_RENAMES = [
    (r"^head\.projects\.(\d)\.", r"depth_anything.neck.reassemble_stage.layers.\1.projection."),
    (r"^head\.resize_layers\.(\d)\.", r"depth_anything.neck.reassemble_stage.layers.\1.resize."),
    (r"^head\.scratch\.layer(\d)_rn\.", lambda m: f"depth_anything.neck.convs.{int(m.group(1)) - 1}."),
    (r"^head\.scratch\.refinenet(\d)\.out_conv\.",
     lambda m: f"depth_anything.neck.fusion_stage.layers.{4 - int(m.group(1))}.projection."),
    (r"^head\.scratch\.refinenet(\d)\.resConfUnit(\d)\.conv(\d)\.",
     lambda m: (f"depth_anything.neck.fusion_stage.layers.{4 - int(m.group(1))}"
                f".residual_layer{m.group(2)}.convolution{m.group(3)}.")),
    (r"^head\.scratch\.output_conv1\.", "depth_anything.head.conv1."),
    (r"^head\.scratch\.output_conv2\.0\.", "depth_anything.head.conv2."),
    (r"^head\.scratch\.output_conv2\.2\.", "depth_anything.head.conv3."),
    (r"^head\.motion_modules\.", "motion_modules."),
]

# Official DINOv2 names -> transformers Dinov2 names; attention names differ between transformers
# releases, so each maps to candidates and the one the instantiated model has wins.
_ENCODER_RENAMES = [
    (r"^pretrained\.cls_token$", ["embeddings.cls_token"]),
    (r"^pretrained\.mask_token$", ["embeddings.mask_token"]),
    (r"^pretrained\.pos_embed$", ["embeddings.position_embeddings"]),
    (r"^pretrained\.patch_embed\.proj\.", ["embeddings.patch_embeddings.projection."]),
    (r"^pretrained\.norm\.", ["layernorm."]),
    (r"^pretrained\.blocks\.(\d+)\.norm(\d)\.", [r"encoder.layer.\1.norm\2."]),
    (r"^pretrained\.blocks\.(\d+)\.ls(\d)\.gamma$", [r"encoder.layer.\1.layer_scale\2.lambda1"]),
    (r"^pretrained\.blocks\.(\d+)\.mlp\.fc(\d)\.", [r"encoder.layer.\1.mlp.fc\2."]),
    (r"^pretrained\.blocks\.(\d+)\.attn\.proj\.",
     [r"encoder.layer.\1.attention.o_proj.", r"encoder.layer.\1.attention.output.dense."]),
]
_QKV = re.compile(r"^pretrained\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_QKV_TARGETS = [("q_proj", "k_proj", "v_proj"), ("attention.query", "attention.key", "attention.value")]


def _rename(pattern: str, replacement, key: str) -> str | None:
    if re.match(pattern, key) is None:
        return None
    return re.sub(pattern, replacement, key)


def convert_official_state_dict(state_dict: dict, model: VideoDepthAnything) -> dict:
    """Rename an official Video Depth Anything state dict to ``model``'s parameter names.

    The fused DINOv2 ``attn.qkv`` projection is split into query/key/value.

    Raises:
        KeyError: a key that has no counterpart in ``model`` (names the first few).
    """
    own = set(model.state_dict())
    converted, unknown = {}, []
    for key, value in state_dict.items():
        qkv = _QKV.match(key)
        if qkv:
            block, kind = qkv.groups()
            for names in _QKV_TARGETS:
                targets = [f"depth_anything.backbone.encoder.layer.{block}.attention.{n}.{kind}" for n in names]
                if all(t in own for t in targets):
                    for target, part in zip(targets, value.chunk(3, dim=0)):
                        converted[target] = part
                    break
            else:
                unknown.append(key)
            continue
        target = None
        for pattern, replacement in _HEAD_RENAMES:
            target = _rename(pattern, replacement, key)
            if target is not None:
                break
        if target is None:
            for pattern, candidates in _ENCODER_RENAMES:
                names = [_rename(pattern, c, key) for c in candidates]
                names = [f"depth_anything.backbone.{n}" for n in names if n is not None]
                target = next((n for n in names if n in own), names[0] if names else None)
                if target is not None:
                    break
        if target is None or target not in own:
            unknown.append(key)
            continue
        converted[target] = value
    if unknown:
        raise KeyError(f"{len(unknown)} checkpoint keys have no counterpart in Video Depth Anything, e.g. "
                       f"{unknown[:5]} — is this an official video_depth_anything_vits/vitb/vitl .pth file?")
    return converted


def architecture_from_state_dict(state_dict: dict) -> VDAArchitecture:
    """Recognise vits / vitb / vitl from the encoder width; the stored position grid sets image_size."""
    try:
        pos_embed = state_dict["pretrained.pos_embed"]
    except KeyError:
        raise KeyError("not a Video Depth Anything checkpoint: 'pretrained.pos_embed' is missing") from None
    width = pos_embed.shape[-1]
    for architecture in ARCHITECTURES.values():
        if architecture.hidden_size == width:
            grid = int(round(math.sqrt(pos_embed.shape[1] - 1)))
            return VDAArchitecture(**{**architecture.__dict__, "image_size": grid * PATCH})
    raise ValueError(f"unknown Video Depth Anything encoder width {width}; expected one of "
                     f"{ {name: a.hidden_size for name, a in ARCHITECTURES.items()} }")


def load_official_checkpoint(path_or_state_dict, architecture: VDAArchitecture | None = None) -> VideoDepthAnything:
    """Build a model and load an official ``video_depth_anything_*.pth`` (path or state dict) strictly.

    Args:
        architecture: sizes; default recognised from the checkpoint (vits, vitb or vitl).
    """
    if isinstance(path_or_state_dict, dict):
        state_dict = path_or_state_dict
    else:
        state_dict = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
    architecture = architecture or architecture_from_state_dict(state_dict)
    model = VideoDepthAnything(architecture)
    converted = convert_official_state_dict(state_dict, model)
    missing = sorted(set(model.state_dict()) - set(converted))
    # The temporal position tables are fixed sin/cos values; tolerate checkpoints saved without them.
    missing = [k for k in missing if not k.endswith("pos_encoder.pe")]
    if missing:
        raise KeyError(f"the checkpoint lacks {len(missing)} weights of Video Depth Anything, e.g. {missing[:5]}")
    model.load_state_dict(converted, strict=False)
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Whole-video inference
# --------------------------------------------------------------------------------------------------


def network_input_size(height: int, width: int, input_size: int = 518) -> tuple[int, int]:
    """(h, w) the frames are resized to: the short side to about ``input_size``, multiples of 14.

    As the official transform (lower-bound resize keeping the aspect ratio), including its memory
    rule: frames wider than 16:9 get a proportionally smaller ``input_size``.
    """
    ratio = max(height, width) / min(height, width)
    if ratio > 1.78:
        input_size = round(int(input_size * 1.777 / ratio) / PATCH) * PATCH
    scale = max(input_size / height, input_size / width)

    def to_multiple(value: float, minimum: int) -> int:
        rounded = int(round(value / PATCH) * PATCH)
        return rounded if rounded >= minimum else int(math.ceil(value / PATCH) * PATCH)

    return to_multiple(scale * height, input_size), to_multiple(scale * width, input_size)


def _prepare_frames(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, h, w) float32 ImageNet-normalised (bicubic resize, as official)."""
    height, width = size
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    out = np.empty((len(frames), 3, height, width), dtype=np.float32)
    for i, frame in enumerate(frames):
        resized = cv2.resize(frame.astype(np.float32) / 255.0, (width, height), interpolation=cv2.INTER_CUBIC)
        out[i] = ((resized - mean) / std).transpose(2, 0, 1)
    return torch.from_numpy(out)


def _scale_and_shift(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares s, t minimising |s * prediction + t - target|^2 (identity when degenerate)."""
    p, q = prediction.astype(np.float64).ravel(), target.astype(np.float64).ravel()
    a00, a01, a11 = (p * p).sum(), p.sum(), float(p.size)
    b0, b1 = (p * q).sum(), q.sum()
    det = a00 * a11 - a01 * a01
    if det == 0:
        return 1.0, 0.0
    return (a11 * b0 - a01 * b1) / det, (a00 * b1 - a01 * b0) / det


@torch.no_grad()
def infer_video_depth(
    model: VideoDepthAnything,
    frames: np.ndarray,
    input_size: int = 518,
    device: str | torch.device = "cpu",
    half: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    """Relative disparity of a whole video with overlapping windows (official schedule).

    Args:
        frames: (T, H, W, 3) uint8 RGB, any T >= 1.
        input_size: network short side (518 as trained; smaller is faster and coarser).
        half: run under float16 autocast (CUDA only; as the official script's default).
        progress: optional wrapper for the window iterator (e.g. ``tqdm``).

    Returns:
        (T, H, W) float32 disparity, one scale for the whole video (large = near).
    """
    num_frames, height, width = frames.shape[:3]
    if model.architecture.num_frames < WINDOW:
        raise ValueError(f"the model's temporal length {model.architecture.num_frames} is below the {WINDOW}-frame window")
    step = WINDOW - OVERLAP
    padding = (step - num_frames % step) % step + OVERLAP
    indices = list(range(num_frames)) + [num_frames - 1] * padding  # repeat the last frame
    size = network_input_size(height, width, input_size)

    starts = range(0, num_frames, step)
    raw: list[np.ndarray] = []  # WINDOW depth maps per window
    previous = None
    for start in (progress(starts) if progress else starts):
        window = _prepare_frames(frames[indices[start:start + WINDOW]], size).to(device)
        if previous is not None:
            window[:OVERLAP] = previous[list(KEYFRAMES)]
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=half and torch.device(device).type == "cuda"):
            depth = model(window[None])[0].float()
        depth = F.interpolate(depth[:, None], size=(height, width), mode="bilinear", align_corners=True)[:, 0]
        raw.extend(depth.cpu().numpy())
        previous = window

    aligned: list[np.ndarray] = list(raw[:WINDOW])
    references = [raw[k] for k in KEYFRAMES[:ALIGN_FRAMES]]
    for offset in range(WINDOW, len(raw), WINDOW):
        current = raw[offset:offset + WINDOW]
        scale, shift = _scale_and_shift(np.stack(current[:ALIGN_FRAMES]), np.stack(references))

        def rescale(depth: np.ndarray) -> np.ndarray:
            return np.maximum(depth * scale + shift, 0.0)

        weights = np.linspace(0.0, 1.0, CROSSFADE)
        for i, weight in enumerate(weights):  # cross-fade the frames both windows saw
            index = len(aligned) - CROSSFADE + i
            aligned[index] = aligned[index] * (1.0 - weight) + rescale(current[ALIGN_FRAMES + i]) * weight
        aligned.extend(rescale(d) for d in current[OVERLAP:])
        # frame 0 of the video stays the anchor; window position 12 becomes the second reference
        references = [references[0]] + [rescale(current[k]) for k in KEYFRAMES[1:ALIGN_FRAMES]]
    return np.stack(aligned[:num_frames]).astype(np.float32)
