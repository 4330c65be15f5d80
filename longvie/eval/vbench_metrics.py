"""VBench's published metric definitions (Huang et al., "VBench", CVPR 2024) on our stack.

The ``vbench`` package pins transformers 4.33 and numpy<2, so the definitions are re-implemented
here on transformers / torchvision models. Each scorer takes one clip, (T, H, W, 3) uint8 RGB, and
returns a value in [0, 1] (the tables show it as a percentage, like the paper):

===========  ===================================  =========================================================
metric       model (``model_id``)                 definition (as VBench computes it)
===========  ===================================  =========================================================
A.Q.         openai/clip-vit-large-patch14 +      LAION aesthetic linear head on the L2-normalised CLIP
             LAION sa_0_4_vit_l_14_linear.pth     image embedding, per frame, / 10, mean over frames
I.Q.         pyiqa ``musiq`` (MUSIQ, SPAQ)        MUSIQ score of each frame (longer side <= 512) / 100
S.C.         facebook/dino-vitb16                 mean over frames t >= 1 of (max(0, cos(f_t, f_t-1)) +
                                                  max(0, cos(f_t, f_0))) / 2, f = DINO CLS feature
B.C.         openai/clip-vit-base-patch32         the same scheme on CLIP image embeddings
O.C.         ViCLIP in VBench; here a stand-in:   mean cosine of CLIP ViT-L/14 frame and prompt embeddings
             openai/clip-vit-large-patch14        — NOT comparable to the paper's O.C. (labelled so)
D.D.         torchvision raft_large C_T_V1        frames at ~8 fps; per pair the mean of the top 5% flow
                                                  magnitudes; the clip is dynamic (1) when at least
                                                  round(4 n / 16) of the n frames' pairs exceed
                                                  6 * min(H, W) / 256 px, else static (0)
===========  ===================================  =========================================================

Models are injected (``ClipScorer(model)``), so the tests run every scorer on tiny random-weight
models; :func:`load_scorers` loads the real ones offline-safely and reports missing weights as
:class:`~longvie.eval.availability.MetricUnavailable` instead of raising.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .availability import MetricUnavailable, downloads_allowed, torch_hub_weights

__all__ = ["VBENCH_METRICS", "MODEL_IDS", "FrameEmbedder", "consistency_score", "AestheticScorer",
           "ConsistencyScorer", "TextSimilarityScorer", "DynamicDegreeScorer", "MusiqScorer", "load_scorers",
           "ScorerSettings"]

VBENCH_METRICS = ("aesthetic_quality", "imaging_quality", "subject_consistency", "background_consistency",
                  "overall_consistency", "dynamic_degree")
CLIP_L14 = "openai/clip-vit-large-patch14"
CLIP_B32 = "openai/clip-vit-base-patch32"
DINO_B16 = "facebook/dino-vitb16"
AESTHETIC_HEAD = "LAION-AI/aesthetic-predictor sa_0_4_vit_l_14_linear.pth"
AESTHETIC_HEAD_URL = "https://github.com/LAION-AI/aesthetic-predictor/raw/main/sa_0_4_vit_l_14_linear.pth"
RAFT_ID = "torchvision raft_large Raft_Large_Weights.C_T_V1"
MUSIQ_ID = "pyiqa musiq (MUSIQ, SPAQ weights)"
MODEL_IDS = {
    "aesthetic_quality": f"{CLIP_L14} + {AESTHETIC_HEAD}",
    "imaging_quality": MUSIQ_ID,
    "subject_consistency": DINO_B16,
    "background_consistency": CLIP_B32,
    "overall_consistency": f"{CLIP_L14} frame-text cosine (stand-in for ViCLIP: not comparable to the paper)",
    "dynamic_degree": RAFT_ID,
}
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _to_tensor(frames: np.ndarray, device):
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0


def _resize_short_side(x, size: int, crop: bool):
    """Bicubic resize of the short side to ``size``; with ``crop`` a centre square of ``size``."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    if crop:
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[..., top:top + size, left:left + size]
    return x


class FrameEmbedder:
    """Frames -> L2-normalised image features (T, D) of a CLIP or ViT (DINO) vision model.

    CLIP: bicubic resize + centre crop to the model's image size, CLIP normalisation,
    ``get_image_features`` (VBench's ``clip_transform``). DINO (``transformers.ViTModel``): short side
    to the image size without cropping, ImageNet normalisation, the CLS token of the last layer
    (VBench's ``dino_transform``).
    """

    def __init__(self, model, model_id: str, device: str | None = None, batch: int = 16):
        import torch

        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device).eval()
        self.model_id = model_id
        self.batch = batch
        self.is_clip = hasattr(model, "get_image_features")
        config = getattr(model.config, "vision_config", model.config)
        self.size = int(config.image_size)
        mean, std = (CLIP_MEAN, CLIP_STD) if self.is_clip else (IMAGENET_MEAN, IMAGENET_STD)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def __call__(self, frames: np.ndarray):
        import torch
        import torch.nn.functional as F

        out = []
        dtype = next(self.model.parameters()).dtype
        with torch.no_grad():
            for start in range(0, len(frames), self.batch):
                x = _resize_short_side(_to_tensor(frames[start:start + self.batch], self.device), self.size,
                                       crop=self.is_clip)
                x = ((x - self.mean) / self.std).to(dtype)
                if self.is_clip:
                    feats = self.model.get_image_features(pixel_values=x)
                    feats = getattr(feats, "pooler_output", feats)  # transformers 5 returns an output object
                else:
                    feats = self.model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[:, 0]
                out.append(F.normalize(feats.float(), dim=-1))
        return torch.cat(out)


def consistency_score(features) -> float:
    """VBench's subject/background consistency of (T, D) L2-normalised features (T >= 2)."""
    import torch

    if len(features) < 2:
        raise ValueError("consistency needs at least two frames")
    to_previous = (features[1:] * features[:-1]).sum(-1).clamp(min=0)
    to_first = (features[1:] * features[:1]).sum(-1).clamp(min=0)
    return float(torch.mean((to_previous + to_first) / 2))


class ConsistencyScorer:
    """S.C. (DINO) or B.C. (CLIP ViT-B/32): :func:`consistency_score` of a clip's frame features."""

    def __init__(self, embedder: FrameEmbedder):
        self.embedder = embedder
        self.model_id = embedder.model_id

    def __call__(self, frames: np.ndarray, prompt: str | None = None) -> float:
        return consistency_score(self.embedder(frames))


class AestheticScorer:
    """A.Q.: the LAION linear head (768 -> 1) on normalised CLIP ViT-L/14 image embeddings, / 10."""

    def __init__(self, embedder: FrameEmbedder, head, model_id: str = MODEL_IDS["aesthetic_quality"]):
        self.embedder = embedder
        self.head = head.to(embedder.device).eval()
        self.model_id = model_id

    def __call__(self, frames: np.ndarray, prompt: str | None = None) -> float:
        import torch

        with torch.no_grad():
            scores = self.head(self.embedder(frames)).reshape(-1)
        return float(scores.mean() / 10.0)


class TextSimilarityScorer:
    """O.C. stand-in: mean cosine similarity of a CLIP model's frame and prompt embeddings."""

    def __init__(self, embedder: FrameEmbedder, tokenizer, model_id: str = MODEL_IDS["overall_consistency"]):
        self.embedder = embedder
        self.tokenizer = tokenizer
        self.model_id = model_id

    def __call__(self, frames: np.ndarray, prompt: str | None = None) -> float:
        import torch
        import torch.nn.functional as F

        if not prompt:
            raise MetricUnavailable("a prompt per clip (--prompts cond.json, or a run directory's manifest)")
        model = self.embedder.model
        tokens = self.tokenizer([prompt], padding=True, truncation=True,
                                max_length=model.config.text_config.max_position_embeddings, return_tensors="pt")
        with torch.no_grad():
            text = model.get_text_features(**{k: v.to(self.embedder.device) for k, v in tokens.items()})
            text = F.normalize(getattr(text, "pooler_output", text).float(), dim=-1)
        return float((self.embedder(frames) @ text.T).mean())


class DynamicDegreeScorer:
    """D.D.: VBench's RAFT rule on one clip; 1.0 = dynamic, 0.0 = static (the video's D.D. is the mean)."""

    def __init__(self, model, model_id: str = RAFT_ID, device: str | None = None, fps: float = 16.0,
                 iters: int = 20, min_side: int = 128):
        import torch

        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device).eval()
        self.model_id = model_id
        self.interval = max(1, round(fps / 8))
        self.iters = iters
        self.min_side = min_side  # RAFT's 4-level correlation pyramid needs >= 128 px after padding

    def pair_scores(self, frames: np.ndarray) -> np.ndarray:
        """Mean of the top 5% flow magnitudes for each consecutive pair of the sampled frames."""
        import torch
        import torch.nn.functional as F

        frames = frames[::self.interval]
        x = _to_tensor(frames, self.device) * 2 - 1
        h, w = x.shape[-2:]
        ph, pw = max(self.min_side, -(-h // 8) * 8), max(self.min_side, -(-w // 8) * 8)
        top, left = (ph - h) // 2, (pw - w) // 2
        x = F.pad(x, (left, pw - w - left, top, ph - h - top), mode="replicate")
        scores = []
        with torch.no_grad():
            for i in range(len(x) - 1):
                flow = self.model(x[i:i + 1], x[i + 1:i + 2], num_flow_updates=self.iters)[-1][0]
                flow = flow[:, top:top + h, left:left + w]
                magnitude = torch.sqrt((flow ** 2).sum(0)).flatten()
                cut = int(h * w * 0.05)
                scores.append(float(torch.sort(magnitude, descending=True).values[:cut].mean()) if cut else 0.0)
        return np.asarray(scores)

    def __call__(self, frames: np.ndarray, prompt: str | None = None) -> float:
        scores = self.pair_scores(frames)
        sampled = len(frames[::self.interval])
        threshold = 6.0 * min(frames.shape[1:3]) / 256.0
        needed = round(4 * sampled / 16.0)
        return 1.0 if int((scores > threshold).sum()) >= needed else 0.0


class MusiqScorer:
    """I.Q.: MUSIQ (pyiqa) per frame, frames scaled so the longer side is at most 512, / 100."""

    def __init__(self, metric, model_id: str = MUSIQ_ID, device: str | None = None):
        import torch

        self.metric = metric
        self.model_id = model_id
        self.device = torch.device(device or "cpu")

    def __call__(self, frames: np.ndarray, prompt: str | None = None) -> float:
        import torch
        import torch.nn.functional as F

        x = _to_tensor(frames, self.device)
        h, w = x.shape[-2:]
        if max(h, w) > 512:
            scale = 512 / max(h, w)
            x = F.interpolate(x, size=(int(h * scale), int(w * scale)), mode="bilinear", antialias=True)
        with torch.no_grad():
            return float(torch.as_tensor([float(self.metric(x[i:i + 1])) for i in range(len(x))]).mean() / 100.0)


@dataclass
class ScorerSettings:
    """Where the learned metrics' weights come from."""

    local_files_only: bool = False
    device: str | None = None
    aesthetic_head: str | None = None  # path of sa_0_4_vit_l_14_linear.pth (else torch.hub's cache)
    raft_weights: str | None = None  # path of raft_large_C_T_V1 weights (else torch.hub's cache)
    fps: float = 16.0


def _hf(loader, model_id: str, settings: ScorerSettings):
    local = settings.local_files_only or not downloads_allowed(False)
    try:
        return loader.from_pretrained(model_id, local_files_only=local)
    except (OSError, ValueError) as err:
        why = "--local-files forbids downloads" if settings.local_files_only else (
            "not in the Hugging Face cache and the hub is unreachable" if local else str(err).splitlines()[0])
        raise MetricUnavailable(model_id, why) from err


def _aesthetic_head(settings: ScorerSettings):
    import torch

    state = torch_hub_weights(AESTHETIC_HEAD_URL, AESTHETIC_HEAD, settings.local_files_only, settings.aesthetic_head)
    head = torch.nn.Linear(768, 1)
    head.load_state_dict(state)
    return head


def _raft(settings: ScorerSettings):
    from torchvision.models.optical_flow import Raft_Large_Weights, raft_large

    weights = Raft_Large_Weights.C_T_V1
    state = torch_hub_weights(weights.url, RAFT_ID, settings.local_files_only, settings.raft_weights)
    model = raft_large(weights=None)
    model.load_state_dict(state)
    return model


def _musiq(settings: ScorerSettings):
    try:
        import pyiqa
    except ImportError as err:
        raise MetricUnavailable("pyiqa (pip install pyiqa; not a LongVie dependency: it pins other packages)") from err
    if not downloads_allowed(settings.local_files_only):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return pyiqa.create_metric("musiq", device=settings.device or "cpu", as_loss=False)
    except Exception as err:  # noqa: BLE001 - pyiqa raises many kinds when its weights are missing
        raise MetricUnavailable(MUSIQ_ID, str(err).splitlines()[0] if str(err) else type(err).__name__) from err


def load_scorers(settings: ScorerSettings, metrics=VBENCH_METRICS) -> dict[str, object]:
    """The scorer of each metric, or the :class:`MetricUnavailable` that says what it needs.

    Models shared by two metrics (CLIP ViT-L/14 for A.Q. and O.C.) are loaded once.
    """
    from transformers import AutoTokenizer, CLIPModel

    scorers: dict[str, object] = {}
    cache: dict[str, object] = {}

    def clip(model_id):
        if model_id not in cache:
            try:
                cache[model_id] = FrameEmbedder(_hf(CLIPModel, model_id, settings), model_id, settings.device)
            except MetricUnavailable as err:
                cache[model_id] = err
        if isinstance(cache[model_id], MetricUnavailable):
            raise cache[model_id]
        return cache[model_id]

    builders: dict[str, Callable[[], object]] = {
        "aesthetic_quality": lambda: AestheticScorer(clip(CLIP_L14), _aesthetic_head(settings)),
        "imaging_quality": lambda: MusiqScorer(_musiq(settings), device=settings.device),
        "subject_consistency": lambda: ConsistencyScorer(FrameEmbedder(_dino(settings), DINO_B16, settings.device)),
        "background_consistency": lambda: ConsistencyScorer(clip(CLIP_B32)),
        "overall_consistency": lambda: TextSimilarityScorer(clip(CLIP_L14), _hf(AutoTokenizer, CLIP_L14, settings)),
        "dynamic_degree": lambda: DynamicDegreeScorer(_raft(settings), device=settings.device, fps=settings.fps),
    }
    for name in metrics:
        try:
            scorers[name] = builders[name]()
        except MetricUnavailable as err:
            scorers[name] = err
    return scorers


class _DinoLoader:
    @staticmethod
    def from_pretrained(model_id, **kwargs):
        from transformers import ViTModel

        return ViTModel.from_pretrained(model_id, add_pooling_layer=False, **kwargs)


def _dino(settings: ScorerSettings):
    return _hf(_DinoLoader, DINO_B16, settings)
