"""Every VBench metric backend on tiny random-weight models (plumbing and shapes), its rule and its
whole-video aggregation checked by hand, and the offline path: missing weights are reported, never raised."""
import time

import numpy as np
import pytest
import torch

from longvie.eval.availability import MetricUnavailable
from longvie.eval.vbench_metrics import (
    VBENCH_METRICS,
    AestheticScorer,
    ConsistencyScorer,
    DynamicDegreeScorer,
    FrameEmbedder,
    MusiqScorer,
    ScorerSettings,
    TextSimilarityScorer,
    consistency_score,
    load_scorers,
)
from longvie.eval.vbench_preprocess import clip_preprocess, dino_position_embedding, dino_preprocess


def _frames(t=5, h=20, w=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_clip():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=8)
    return CLIPModel(config).eval()


class _Tokenizer:
    """Stands for CLIP's tokenizer: bytes of the prompt as token ids."""

    def __call__(self, texts, max_length, **kwargs):
        ids = torch.tensor([[min(ord(c), 98) for c in t[:max_length]] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_consistency_score_hand_computed():
    f = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=-1)
    # t=1: prev 0.6, first 0.6 -> 0.6; t=2: prev 0.8, first 0.0 -> 0.4
    assert consistency_score(f) == pytest.approx(0.5)
    assert consistency_score(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == 0.0  # negative cosines clamp to 0


class _ColourEmbedder:
    """A feature per frame that turns with the frame's mean colour: a stand-in for DINO whose
    similarities are known in closed form (angle = 90 degrees * mean red level / 255)."""

    model_id = "colour-angle"

    def __call__(self, frames):
        angle = frames[..., 0].reshape(len(frames), -1).mean(1) / 255.0 * np.pi / 2
        return torch.tensor(np.stack([np.cos(angle), np.sin(angle)], 1))


def test_drifting_sequence_whole_video_shows_what_per_clip_hides():
    """A slow drift over 4 clips of 21 frames: each clip alone looks consistent, the video does not."""
    red = np.linspace(0, 255, 81)  # a drift of 90 degrees over the whole video
    frames = np.zeros((81, 4, 4, 3), np.uint8)
    frames[..., 0] = np.round(red)[:, None, None]
    ranges = [(0, 21), (20, 41), (40, 61), (60, 81)]
    scored = ConsistencyScorer(_ColourEmbedder()).score(frames, ranges)

    angle = np.round(red) / 255.0 * np.pi / 2

    def by_hand(a):  # VBench: mean over t >= 1 of (cos(a_t - a_t-1) + cos(a_t - a_0)) / 2, clamped at 0
        return np.mean([(max(0, np.cos(a[t] - a[t - 1])) + max(0, np.cos(a[t] - a[0]))) / 2 for t in range(1, len(a))])

    assert scored["video"] == pytest.approx(by_hand(angle), abs=1e-12)
    assert scored["per_clip"] == pytest.approx([by_hand(angle[s:e]) for s, e in ranges], abs=1e-12)
    assert min(scored["per_clip"]) > 0.98 and scored["video"] < 0.87  # the drift shows only in the video's value


def test_clip_backends_on_a_tiny_model(tiny_clip):
    embedder = FrameEmbedder(tiny_clip, "tiny-clip")
    frames = _frames()
    features = embedder(frames)
    assert embedder(frames) is features  # cached: A.Q. and the O.C. stand-in embed once
    with torch.no_grad():  # VBench's pipeline by hand: clip_transform, encode_image, L2 normalisation
        out = tiny_clip.get_image_features(pixel_values=clip_preprocess(frames, 16))
        expected = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)
    torch.testing.assert_close(features, expected)
    still = np.repeat(_frames(1), 4, axis=0)
    assert ConsistencyScorer(embedder).score(still, [(0, 4)])["video"] == pytest.approx(1.0, abs=1e-5)

    head = torch.nn.Linear(8, 1)
    ranges = [(0, 3), (2, 5)]
    scored = AestheticScorer(embedder, head, "tiny").score(frames, ranges)
    with torch.no_grad():
        per_frame = (head(features).reshape(-1) / 10).double().numpy()
    assert scored["video"] == pytest.approx(per_frame.mean())  # VBench: the mean over all frames
    assert scored["per_clip"] == pytest.approx([per_frame[0:3].mean(), per_frame[2:5].mean()])

    text = TextSimilarityScorer(embedder, _Tokenizer(), "tiny")
    value = text.score(frames, ranges, ["a camera glides forward", "it turns left"])
    assert len(value["per_clip"]) == 2 and all(-1 <= v <= 1 for v in value["per_clip"])
    assert value["video"] == pytest.approx(np.mean(value["per_clip"]))
    with pytest.raises(MetricUnavailable, match="prompt"):
        text.score(frames, ranges, ["only one"])


def test_dino_backend_uses_dinos_position_rule():
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    model = ViTModel(ViTConfig(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32,
                               num_hidden_layers=1, num_attention_heads=2), add_pooling_layer=False).eval()
    with torch.no_grad():  # transformers' own grid resize, before the embedder replaces it
        own = model.embeddings(dino_preprocess(_frames(h=20, w=36), 16), interpolate_pos_encoding=True)
    embedder = FrameEmbedder(model, "tiny-dino")
    assert not embedder.is_clip
    frames = _frames(h=20, w=36)  # short side to 16 (bilinear), no crop: 16x28 -> a 2x3 patch grid
    features = embedder(frames)
    assert features.shape == (5, 16)
    x = dino_preprocess(frames, 16)
    assert x.shape[-2:] == (16, 28)
    with torch.no_grad():  # DINO's token embedding by hand: patches, CLS, DINO's interpolated position grid
        tokens = model.embeddings.patch_embeddings(x)
        tokens = torch.cat([model.embeddings.cls_token.expand(len(x), -1, -1), tokens], 1)
        tokens = tokens + dino_position_embedding(model.embeddings.position_embeddings, 16, 28, 8)
        torch.testing.assert_close(model.embeddings(x, interpolate_pos_encoding=True), tokens, rtol=0, atol=0)
        assert not torch.allclose(own, tokens, atol=1e-4)  # the rule matters
        cls = model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[:, 0]
    torch.testing.assert_close(features, torch.nn.functional.normalize(cls, dim=-1))
    assert ConsistencyScorer(embedder).score(np.repeat(_frames(1), 3, 0), [(0, 3)])["video"] == \
        pytest.approx(1.0, abs=1e-5)


class _ConstantFlow(torch.nn.Module):
    """A flow model moving every pixel by ``speed`` px (RAFT's calling convention: list of flows); it
    records the inputs it sees."""

    def __init__(self, speed):
        super().__init__()
        self.speed = speed
        self.inputs = []

    def forward(self, a, b, num_flow_updates=20):
        self.inputs.append((a.clone(), b.clone()))
        flow = torch.zeros(a.shape[0], 2, *a.shape[-2:])
        flow[:, 0] = self.speed
        return [flow]


def test_dynamic_degree_rule_and_whole_video_decision():
    frames = _frames(t=33, h=64, w=96)  # 16 fps -> every 2nd frame: 17 frames, 16 pairs
    threshold = 6.0 * 64 / 256  # 1.5 px
    fast, slow = _ConstantFlow(threshold + 0.1), _ConstantFlow(threshold - 0.1)
    ranges = [(0, 17), (16, 33)]
    scored = DynamicDegreeScorer(fast, min_side=0).score(frames, ranges, fps=16)
    assert scored["video"] == 1.0 and scored["per_clip"] == [1.0, 1.0]
    assert len(fast.inputs) == 16  # each pair once: the clips reuse the whole video's pairs
    assert scored["details"] == {"fps": 16.0, "frame_interval": 2, "sampled_frames": 17, "threshold_px": 1.5,
                                 "pairs_needed": 4, "pairs_over_threshold": 16}
    assert DynamicDegreeScorer(slow, min_side=0).score(frames, ranges, fps=16)["video"] == 0.0
    for fps, pairs in ((8, 32), (24, 10)):  # every frame; every 3rd frame (0, 3, ..., 30)
        model = _ConstantFlow(2.0)
        assert DynamicDegreeScorer(model, min_side=0).score(frames, [(0, 33)], fps=fps)["details"]["frame_interval"] \
            == {8: 1, 24: 3}[fps]
        assert len(model.inputs) == pairs


def test_dynamic_degree_pads_like_raft_and_scores_the_padded_flow():
    frames = _frames(t=3, h=37, w=53)
    model = _ConstantFlow(2.0)
    scorer = DynamicDegreeScorer(model, min_side=0)
    assert scorer.pair_scores(frames, fps=8) == pytest.approx([2.0, 2.0])
    a, _ = model.inputs[0]
    assert a.shape[-2:] == (40, 56)  # InputPadder: 3 px -> 1 before, 2 after, replicated
    expected = torch.nn.functional.pad(torch.from_numpy(frames[:1]).permute(0, 3, 1, 2).float(), (1, 2, 1, 2),
                                       mode="replicate") / 255.0 * 2 - 1
    assert torch.equal(a, expected)


def test_dynamic_degree_on_a_tiny_random_raft():
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    scorer = DynamicDegreeScorer(raft_small(weights=None), iters=2)
    scores = scorer.pair_scores(_frames(t=5, h=37, w=53), fps=16)  # not a multiple of 8; padded to >= 128 inside
    assert scores.shape == (2,) and np.all(np.isfinite(scores))
    assert scorer.score(_frames(t=5, h=37, w=53), [(0, 5)], fps=16)["video"] in (0.0, 1.0)


def test_musiq_frames_reach_the_metric_as_vbench_prepares_them():
    """pyiqa is optional (not installed in CI): the scorer's resizing and scaling with a recording metric."""
    from torchvision import transforms

    seen = []

    def metric(x):
        seen.append(x.clone())
        return torch.tensor([[40.0 + 10 * x.mean().item()]])

    frames = _frames(t=3, h=352, w=640)
    scored = MusiqScorer(metric, "stand-in", batch=2).score(frames, [(0, 2), (1, 3)])
    assert [tuple(x.shape) for x in seen] == [(1, 3, 281, 512)] * 3  # longer side 512: 0.8 * 352 = 281.6 -> 281
    reference = transforms.Resize((281, 512), antialias=False)(torch.Tensor(frames).permute(0, 3, 1, 2)) / 255.
    for i, x in enumerate(seen):
        assert torch.equal(x[0], reference[i])
    per_frame = np.array([(40.0 + 10 * x.mean().item()) / 100 for x in seen])
    assert scored["video"] == pytest.approx(per_frame.mean())
    assert scored["per_clip"] == pytest.approx([per_frame[:2].mean(), per_frame[1:].mean()])


def test_offline_loading_reports_every_missing_model_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    start = time.perf_counter()
    scorers = load_scorers(ScorerSettings(local_files_only=True))
    assert time.perf_counter() - start < 30
    assert set(scorers) == set(VBENCH_METRICS) | {"overall_consistency_clip"}
    for name, scorer in scorers.items():
        assert isinstance(scorer, MetricUnavailable), name
        assert scorer.report.startswith("not computed: needs "), name
    assert "openai/clip-vit-large-patch14" in scorers["aesthetic_quality"].report
    assert "facebook/dino-vitb16" in scorers["subject_consistency"].report
    assert "raft_large" in scorers["dynamic_degree"].report
    assert "ViCLIP" in scorers["overall_consistency"].report  # never a CLIP stand-in under O.C.
    assert "openai/clip-vit-large-patch14" in scorers["overall_consistency_clip"].report


def test_local_weight_files_are_loaded(tmp_path):
    """The aesthetic head and RAFT weights load from files given on the command line."""
    from torchvision.models.optical_flow import raft_large

    from longvie.eval import vbench_metrics

    torch.save(torch.nn.Linear(768, 1).state_dict(), tmp_path / "head.pth")
    head = vbench_metrics._aesthetic_head(ScorerSettings(local_files_only=True, aesthetic_head=tmp_path / "head.pth"))
    assert head.weight.shape == (1, 768)
    torch.save(raft_large(weights=None).state_dict(), tmp_path / "raft.pth")
    model = vbench_metrics._raft(ScorerSettings(local_files_only=True, raft_weights=tmp_path / "raft.pth"))
    assert sum(p.numel() for p in model.parameters()) > 5_000_000
