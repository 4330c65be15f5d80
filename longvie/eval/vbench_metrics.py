"""VBench's metrics (Huang et al., "VBench", CVPR 2024) as VBench computes them, on our stack.

The ``vbench`` package pins transformers 4.33 and numpy<2, so it cannot be a dependency; its
definitions are re-implemented here, each on the same weights (in the Hugging Face / torchvision
layout) with the same preprocessing (:mod:`longvie.eval.vbench_preprocess`), frame sampling and
aggregation. Sources: Vchitect/VBench ``vbench/<dimension>.py`` and ``vbench/utils.py``.

========  =====================================  ================================================================
metric    weights (VBench's file -> ours)         whole video, as VBench scores one video file
========  =====================================  ================================================================
A.Q.      OpenAI CLIP ViT-L/14 (``clip.load``) ->  every frame: LAION linear head on the L2-normalised CLIP image
          ``openai/clip-vit-large-patch14``;      embedding, / 10; mean over all frames (``aesthetic_quality.py``
          LAION ``sa_0_4_vit_l_14_linear.pth``   ``laion_aesthetic``)
I.Q.      pyiqa MUSIQ ``musiq_spaq_ckpt-         every frame, longer side scaled to 512 when larger (bilinear, no
          358bb6af.pth`` -> pyiqa ``musiq-spaq``  antialias); mean over all frames / 100 (``imaging_quality.py``)
S.C.      DINO ``dino_vitb16`` (torch.hub) ->     every frame: mean over t >= 1 of (max(0, cos(f_t, f_t-1)) +
          ``facebook/dino-vitb16``                max(0, cos(f_t, f_0))) / 2 with f the DINO CLS feature
                                                  (``subject_consistency.py``): f_0 is the video's first frame
B.C.      OpenAI CLIP ViT-B/32 ->                 the same on CLIP image embeddings (``background_consistency.py``)
          ``openai/clip-vit-base-patch32``
O.C.      ViCLIP ``ViClip-InternVid-10M-FLT.pth``  8 frames ("middle" sampling) through ViCLIP, cosine with the
                                                  prompt. ViCLIP is not implemented here: "not computed", always.
                                                  ``overall_consistency_clip`` (ours, its own column) is the mean
                                                  CLIP ViT-L/14 frame-prompt cosine — not VBench's O.C.
D.D.      RAFT ``raft-things.pth`` -> torchvision  frames every round(fps / 8) of the file's frame rate; the video
          ``raft_large`` ``C_T_V1`` (ported from  is dynamic (1) or static (0) by VBench's rule
          the same checkpoint)                    (:func:`~longvie.eval.vbench_preprocess.is_dynamic`)
========  =====================================  ================================================================

Each scorer's :meth:`score` takes the whole video (T, H, W, 3) uint8 RGB, the clip ranges, the
prompts and the frame rate, computes what VBench computes per frame (or per frame pair) once, and
returns ``{"video": <VBench's value for the whole video>, "per_clip": [<the same definition on each
clip alone>]}`` — the per-clip breakdown is ours (VBench has none); each clip's S.C. compares with
that clip's first frame, so it cannot see drift across clips, which the whole-video value does.

On CUDA the CLIP models run in float16 as OpenAI's ``clip.load`` does in VBench; on the CPU in
float32. Models are injected (``ClipScorer(model)``), so the tests run every scorer on tiny
random-weight models; :func:`load_scorers` loads the real ones offline-safely and reports missing
weights as :class:`~longvie.eval.availability.MetricUnavailable` instead of raising.
"""
from __future__ import annotations

import types
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .availability import MetricUnavailable, downloads_allowed, torch_hub_weights
from .vbench_preprocess import (
    clip_preprocess,
    dino_position_embedding,
    dino_preprocess,
    dynamic_frame_interval,
    dynamic_params,
    frames_to_float255,
    is_dynamic,
    musiq_preprocess,
    raft_pad,
    top_flow_score,
)

__all__ = ["VBENCH_METRICS", "EXTRA_METRICS", "MODEL_IDS", "VICLIP_NEEDS", "FrameEmbedder", "consistency_score",
           "AestheticScorer", "ConsistencyScorer", "TextSimilarityScorer", "DynamicDegreeScorer", "MusiqScorer",
           "load_scorers", "ScorerSettings", "use_dino_position_rule"]

VBENCH_METRICS = ("aesthetic_quality", "imaging_quality", "subject_consistency", "background_consistency",
                  "overall_consistency", "dynamic_degree")
# Not VBench's: computed when "overall_consistency" is asked for, shown in its own column.
EXTRA_METRICS = ("overall_consistency_clip",)
CLIP_L14 = "openai/clip-vit-large-patch14"
CLIP_B32 = "openai/clip-vit-base-patch32"
DINO_B16 = "facebook/dino-vitb16"
DINO_LAYER_NORM_EPS = 1e-6  # facebookresearch/dino vision_transformer.py: vit_base uses LayerNorm(eps=1e-6)
AESTHETIC_HEAD = "LAION-AI/aesthetic-predictor sa_0_4_vit_l_14_linear.pth"
AESTHETIC_HEAD_URL = "https://github.com/LAION-AI/aesthetic-predictor/raw/main/sa_0_4_vit_l_14_linear.pth"
RAFT_ID = "torchvision raft_large Raft_Large_Weights.C_T_V1 (RAFT raft-things.pth, ported)"
MUSIQ_METRIC = "musiq-spaq"  # pyiqa's name of MUSIQ with the SPAQ checkpoint VBench loads
MUSIQ_FILE = "musiq_spaq_ckpt-358bb6af.pth"
MUSIQ_ID = f"pyiqa {MUSIQ_METRIC} ({MUSIQ_FILE})"
VICLIP_NEEDS = ("ViCLIP (VBench's ViClip-InternVid-10M-FLT.pth), which LongVie does not implement; "
                "overall_consistency_clip is a CLIP stand-in in its own column")
MODEL_IDS = {
    "aesthetic_quality": f"{CLIP_L14} + {AESTHETIC_HEAD}",
    "imaging_quality": MUSIQ_ID,
    "subject_consistency": DINO_B16,
    "background_consistency": CLIP_B32,
    "overall_consistency": "ViCLIP-InternVid-10M-FLT (not implemented)",
    "overall_consistency_clip": f"{CLIP_L14} frame-prompt cosine (ours; not VBench's ViCLIP)",
    "dynamic_degree": RAFT_ID,
}


def use_dino_position_rule(model) -> None:
    """Make a ``transformers`` ViT interpolate its position grid as DINO does
    (:func:`~longvie.eval.vbench_preprocess.dino_position_embedding`) instead of transformers' exact-size
    resize; the embeddings' ``interpolate_pos_encoding`` is replaced on this instance only."""
    embeddings = model.embeddings

    def interpolate(self, tokens, height, width):
        return dino_position_embedding(self.position_embeddings, height, width, self.patch_size)

    embeddings.interpolate_pos_encoding = types.MethodType(interpolate, embeddings)


class FrameEmbedder:
    """Frames -> L2-normalised image features (T, D) float32 of a CLIP or DINO (``ViTModel``) model.

    CLIP: :func:`~longvie.eval.vbench_preprocess.clip_preprocess` (VBench's ``clip_transform``) and
    ``get_image_features`` (= OpenAI CLIP's ``encode_image``). DINO:
    :func:`~longvie.eval.vbench_preprocess.dino_preprocess` and the last layer's normalised CLS token
    (= DINO's ``forward``), with DINO's position-grid interpolation. The features of the last video
    are kept, so two metrics on one model (A.Q. and the O.C. stand-in) embed the frames once.
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
        if not self.is_clip:
            use_dino_position_rule(self.model)
        self._last: tuple | None = None

    def preprocess(self, frames: np.ndarray):
        """The model's input tensor for ``frames`` (float32, before the cast to the model's dtype)."""
        return (clip_preprocess if self.is_clip else dino_preprocess)(frames, self.size, self.device)

    def __call__(self, frames: np.ndarray):
        import torch
        import torch.nn.functional as F

        if self._last is not None and self._last[0]() is frames:
            return self._last[1]
        out = []
        dtype = next(self.model.parameters()).dtype
        with torch.no_grad():
            for start in range(0, len(frames), self.batch):
                x = self.preprocess(frames[start:start + self.batch]).to(dtype)
                if self.is_clip:
                    feats = self.model.get_image_features(pixel_values=x)
                    feats = getattr(feats, "pooler_output", feats)  # transformers 5 returns an output object
                else:
                    feats = self.model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[:, 0]
                out.append(F.normalize(feats.float(), dim=-1))
        features = torch.cat(out)
        try:
            self._last = (weakref.ref(frames), features)
        except TypeError:  # not weak-referenceable (a view of a list?): no cache
            self._last = None
        return features


def consistency_score(features) -> float:
    """VBench's subject/background consistency of (T, D) L2-normalised features (T >= 2): the mean over
    t >= 1 of (max(0, cos(f_t, f_t-1)) + max(0, cos(f_t, f_0))) / 2."""
    import torch

    if len(features) < 2:
        raise ValueError("consistency needs at least two frames")
    to_previous = (features[1:] * features[:-1]).sum(-1).clamp(min=0)
    to_first = (features[1:] * features[:1]).sum(-1).clamp(min=0)
    return float(torch.mean((to_previous.double() + to_first.double()) / 2))


def _per_clip(values: np.ndarray, ranges) -> list[float]:
    return [float(np.mean(values[start:end])) for start, end in ranges]


class ConsistencyScorer:
    """S.C. (DINO) or B.C. (CLIP ViT-B/32): :func:`consistency_score` over all frames of the video (VBench)
    and over each clip's frames (ours)."""

    def __init__(self, embedder: FrameEmbedder):
        self.embedder = embedder
        self.model_id = embedder.model_id

    def score(self, frames: np.ndarray, ranges, prompts=(), fps: float = 16.0) -> dict:
        features = self.embedder(frames)
        per_clip = [consistency_score(features[s:e]) if e - s >= 2 else None for s, e in ranges]
        return {"video": consistency_score(features), "per_clip": per_clip}


class AestheticScorer:
    """A.Q.: the LAION linear head (768 -> 1) on normalised CLIP ViT-L/14 image embeddings of every
    frame, / 10; the mean over all frames (VBench) and over each clip (ours)."""

    def __init__(self, embedder: FrameEmbedder, head, model_id: str = MODEL_IDS["aesthetic_quality"]):
        self.embedder = embedder
        self.head = head.to(embedder.device).float().eval()
        self.model_id = model_id

    def frame_scores(self, frames: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return (self.head(self.embedder(frames)).reshape(-1) / 10.0).double().cpu().numpy()

    def score(self, frames: np.ndarray, ranges, prompts=(), fps: float = 16.0) -> dict:
        values = self.frame_scores(frames)
        return {"video": float(values.mean()), "per_clip": _per_clip(values, ranges)}


class TextSimilarityScorer:
    """``overall_consistency_clip`` (ours, not VBench's O.C.): per clip the mean cosine of its frames'
    CLIP ViT-L/14 embeddings with its prompt; the video's value is the mean over clips."""

    def __init__(self, embedder: FrameEmbedder, tokenizer, model_id: str = MODEL_IDS["overall_consistency_clip"]):
        self.embedder = embedder
        self.tokenizer = tokenizer
        self.model_id = model_id

    def text_features(self, prompt: str):
        import torch
        import torch.nn.functional as F

        model = self.embedder.model
        tokens = self.tokenizer([prompt], padding=True, truncation=True,
                                max_length=model.config.text_config.max_position_embeddings, return_tensors="pt")
        with torch.no_grad():
            text = model.get_text_features(**{k: v.to(self.embedder.device) for k, v in tokens.items()})
        return F.normalize(getattr(text, "pooler_output", text).float(), dim=-1)

    def score(self, frames: np.ndarray, ranges, prompts=(), fps: float = 16.0) -> dict:
        if len(prompts) < len(ranges) or not all(prompts[:len(ranges)]):
            raise MetricUnavailable("a prompt per clip (--prompts cond.json, or a run directory's manifest)")
        features = self.embedder(frames)
        per_clip = [float((features[s:e] @ self.text_features(prompts[i]).T).mean())
                    for i, (s, e) in enumerate(ranges)]
        return {"video": float(np.mean(per_clip)), "per_clip": per_clip}


class DynamicDegreeScorer:
    """D.D.: VBench's RAFT rule. The whole video is one decision (1.0 dynamic, 0.0 static), as VBench
    decides per video file; the per-clip decisions (ours) apply the same rule to each clip alone. Pair
    flows are computed once and shared between the two."""

    def __init__(self, model, model_id: str = RAFT_ID, device: str | None = None, iters: int = 20,
                 min_side: int = 128):
        import torch

        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device).eval()
        self.model_id = model_id
        self.iters = iters  # VBench: iters=20
        # torchvision's RAFT needs >= 128 px (4 pyramid levels of the 1/8 feature map); VBench's videos are
        # larger. Smaller frames (tests) are padded further, which VBench never does.
        self.min_side = min_side

    def pair_score(self, frame_a: np.ndarray, frame_b: np.ndarray) -> float:
        """Mean of the top 5% flow magnitudes of one frame pair over RAFT's padded frame."""
        import torch
        import torch.nn.functional as F

        x = frames_to_float255(np.stack([frame_a, frame_b]), self.device)
        x = raft_pad(x)
        h, w = x.shape[-2:]
        extra_h, extra_w = max(0, self.min_side - h), max(0, self.min_side - w)
        if extra_h or extra_w:
            x = F.pad(x, (0, extra_w, 0, extra_h), mode="replicate")
        x = 2.0 * (x / 255.0) - 1.0  # RAFT's own input normalisation (core/raft.py forward)
        with torch.no_grad():
            flow = self.model(x[:1], x[1:], num_flow_updates=self.iters)[-1][0]
        return top_flow_score(flow[:, :h, :w])

    def pair_scores(self, frames: np.ndarray, fps: float = 16.0) -> np.ndarray:
        """Scores of the consecutive pairs of ``frames[::interval]``."""
        indices = list(range(0, len(frames), dynamic_frame_interval(fps)))
        return np.asarray([self.pair_score(frames[a], frames[b]) for a, b in zip(indices, indices[1:])])

    def score(self, frames: np.ndarray, ranges, prompts=(), fps: float = 16.0) -> dict:
        interval = dynamic_frame_interval(fps)
        height, width = frames.shape[1:3]
        cache: dict[tuple[int, int], float] = {}

        def decide(start: int, end: int) -> tuple[bool, int, int]:
            indices = list(range(start, end, interval))
            scores = []
            for a, b in zip(indices, indices[1:]):
                if (a, b) not in cache:
                    cache[(a, b)] = self.pair_score(frames[a], frames[b])
                scores.append(cache[(a, b)])
            threshold, _ = dynamic_params(height, width, len(indices))
            return is_dynamic(scores, height, width, len(indices)), sum(s > threshold for s in scores), len(indices)

        moving, over, sampled = decide(0, len(frames))
        threshold, needed = dynamic_params(height, width, sampled)
        per_clip = [float(decide(s, e)[0]) for s, e in ranges]
        return {"video": float(moving), "per_clip": per_clip,
                "details": {"fps": float(fps), "frame_interval": interval, "sampled_frames": sampled,
                            "threshold_px": threshold, "pairs_needed": needed, "pairs_over_threshold": int(over)}}


class MusiqScorer:
    """I.Q.: MUSIQ-SPAQ of every frame as VBench prepares it
    (:func:`~longvie.eval.vbench_preprocess.musiq_preprocess`), / 100; mean over all frames (VBench) and
    over each clip (ours)."""

    def __init__(self, metric, model_id: str = MUSIQ_ID, device: str | None = None, batch: int = 8):
        import torch

        self.metric = metric
        self.model_id = model_id
        self.device = torch.device(device or "cpu")
        self.batch = batch

    def frame_scores(self, frames: np.ndarray) -> np.ndarray:
        import torch

        values = []
        with torch.no_grad():
            for start in range(0, len(frames), self.batch):
                x = musiq_preprocess(frames[start:start + self.batch], self.device)
                values += [float(self.metric(x[i:i + 1])) for i in range(len(x))]  # one frame at a time, as VBench
        return np.asarray(values, dtype=np.float64) / 100.0

    def score(self, frames: np.ndarray, ranges, prompts=(), fps: float = 16.0) -> dict:
        values = self.frame_scores(frames)
        return {"video": float(values.mean()), "per_clip": _per_clip(values, ranges)}


@dataclass
class ScorerSettings:
    """Where the learned metrics' weights come from."""

    local_files_only: bool = False
    device: str | None = None
    aesthetic_head: str | None = None  # path of sa_0_4_vit_l_14_linear.pth (else torch.hub's cache)
    raft_weights: str | None = None  # path of raft_large_C_T_V1 weights (else torch.hub's cache)
    musiq_weights: str | None = None  # path of musiq_spaq_ckpt-358bb6af.pth (else pyiqa's cache)


def _hf(loader, model_id: str, settings: ScorerSettings, **kwargs):
    local = settings.local_files_only or not downloads_allowed(False)
    try:
        return loader.from_pretrained(model_id, local_files_only=local, **kwargs)
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
    import torch

    kwargs = {}
    if settings.musiq_weights is not None:
        if not Path(settings.musiq_weights).is_file():
            raise MetricUnavailable(MUSIQ_ID, f"weights file {settings.musiq_weights} not found")
        kwargs["pretrained_model_path"] = str(settings.musiq_weights)
    elif not downloads_allowed(settings.local_files_only):
        cached = Path(torch.hub.get_dir()) / "pyiqa" / MUSIQ_FILE  # pyiqa's DEFAULT_CACHE_DIR
        if not cached.is_file():
            why = "--local-files forbids downloads" if settings.local_files_only else "no network"
            raise MetricUnavailable(MUSIQ_ID, f"{cached} not cached and {why}; pass --musiq-weights")
        kwargs["pretrained_model_path"] = str(cached)
    try:
        return pyiqa.create_metric(MUSIQ_METRIC, device=settings.device or "cpu", as_loss=False, **kwargs)
    except Exception as err:  # noqa: BLE001 - pyiqa raises many kinds when its weights are missing
        raise MetricUnavailable(MUSIQ_ID, str(err).splitlines()[0] if str(err) else type(err).__name__) from err


class _DinoLoader:
    @staticmethod
    def from_pretrained(model_id, **kwargs):
        from transformers import ViTModel

        return ViTModel.from_pretrained(model_id, add_pooling_layer=False, layer_norm_eps=DINO_LAYER_NORM_EPS,
                                        **kwargs)


def _dino(settings: ScorerSettings):
    return _hf(_DinoLoader, DINO_B16, settings)


def load_scorers(settings: ScorerSettings, metrics: Sequence[str] = VBENCH_METRICS) -> dict[str, object]:
    """The scorer of each metric (plus ``overall_consistency_clip`` with ``overall_consistency``), or the
    :class:`MetricUnavailable` that says what it needs. CLIP ViT-L/14 is loaded once for A.Q. and the
    O.C. stand-in."""
    from transformers import AutoTokenizer, CLIPModel

    scorers: dict[str, object] = {}
    cache: dict[str, object] = {}
    half = str(settings.device or "").startswith("cuda")  # OpenAI clip.load keeps fp16 weights on CUDA

    def clip(model_id):
        if model_id not in cache:
            try:
                model = _hf(CLIPModel, model_id, settings)
                cache[model_id] = FrameEmbedder(model.half() if half else model, model_id, settings.device)
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
        "overall_consistency_clip": lambda: TextSimilarityScorer(clip(CLIP_L14),
                                                                 _hf(AutoTokenizer, CLIP_L14, settings)),
        "dynamic_degree": lambda: DynamicDegreeScorer(_raft(settings), device=settings.device),
    }
    for name in metrics:
        if name == "overall_consistency":
            scorers[name] = MetricUnavailable(VICLIP_NEEDS)
            name = "overall_consistency_clip"
        if name in scorers:
            continue
        try:
            scorers[name] = builders[name]()
        except MetricUnavailable as err:
            scorers[name] = err
    return scorers
