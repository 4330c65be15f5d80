"""Every VBench metric backend on tiny random-weight models (plumbing and shapes), its rule checked by
hand, and the offline path: missing weights are reported, never raised."""
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
    ScorerSettings,
    TextSimilarityScorer,
    consistency_score,
    load_scorers,
)


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
    return CLIPModel(config)


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


def test_clip_backends_on_a_tiny_model(tiny_clip):
    embedder = FrameEmbedder(tiny_clip, "tiny-clip")
    features = embedder(_frames())
    assert features.shape == (5, 8)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(5))
    still = np.repeat(_frames(1), 4, axis=0)
    assert ConsistencyScorer(embedder)(still) == pytest.approx(1.0, abs=1e-5)
    assert 0 <= ConsistencyScorer(embedder)(_frames()) < 1

    head = torch.nn.Linear(8, 1)
    score = AestheticScorer(embedder, head, "tiny")(_frames())
    with torch.no_grad():
        expected = float(head(features).mean() / 10)
    assert score == pytest.approx(expected, rel=1e-5)

    text = TextSimilarityScorer(embedder, _Tokenizer(), "tiny")
    value = text(_frames(), "a camera glides forward")
    assert -1 <= value <= 1
    with pytest.raises(MetricUnavailable, match="prompt"):
        text(_frames(), None)


def test_dino_backend_on_a_tiny_vit():
    from transformers import ViTConfig, ViTModel

    model = ViTModel(ViTConfig(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32,
                               num_hidden_layers=1, num_attention_heads=2), add_pooling_layer=False)
    embedder = FrameEmbedder(model, "tiny-dino")
    assert not embedder.is_clip
    assert embedder(_frames(h=20, w=36)).shape == (5, 16)  # short side to 16, no crop: 16x29 positions
    assert ConsistencyScorer(embedder)(np.repeat(_frames(1), 3, 0)) == pytest.approx(1.0, abs=1e-5)


class _ConstantFlow(torch.nn.Module):
    """A flow model moving every pixel by ``speed`` px (RAFT's calling convention: list of flows)."""

    def __init__(self, speed):
        super().__init__()
        self.speed = speed
        self.calls = 0

    def forward(self, a, b, num_flow_updates=20):
        self.calls += 1
        flow = torch.zeros(a.shape[0], 2, *a.shape[-2:])
        flow[:, 0] = self.speed
        return [flow]


def test_dynamic_degree_rule():
    frames = _frames(t=33, h=64, w=96)  # 16 fps -> every 2nd frame: 17 frames, 16 pairs
    threshold = 6.0 * 64 / 256  # 1.5 px
    fast, slow = _ConstantFlow(threshold + 0.1), _ConstantFlow(threshold - 0.1)
    assert DynamicDegreeScorer(fast)(frames) == 1.0 and fast.calls == 16
    assert DynamicDegreeScorer(slow)(frames) == 0.0
    np.testing.assert_allclose(DynamicDegreeScorer(fast).pair_scores(frames), threshold + 0.1, rtol=1e-6)


def test_dynamic_degree_on_a_tiny_random_raft():
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    scorer = DynamicDegreeScorer(raft_small(weights=None), iters=2)
    scores = scorer.pair_scores(_frames(t=5, h=24, w=40))  # padded to 128x128 inside
    assert scores.shape == (2,) and np.all(np.isfinite(scores))
    assert scorer(_frames(t=5, h=24, w=40)) in (0.0, 1.0)


def test_offline_loading_reports_every_missing_model_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    start = time.perf_counter()
    scorers = load_scorers(ScorerSettings(local_files_only=True))
    assert time.perf_counter() - start < 30
    assert set(scorers) == set(VBENCH_METRICS)
    for name, scorer in scorers.items():
        assert isinstance(scorer, MetricUnavailable), name
        assert scorer.report.startswith("not computed: needs ")
    assert "openai/clip-vit-large-patch14" in scorers["aesthetic_quality"].report
    assert "facebook/dino-vitb16" in scorers["subject_consistency"].report
    assert "raft_large" in scorers["dynamic_degree"].report


def test_local_weight_files_are_loaded(tmp_path, monkeypatch):
    """The aesthetic head and RAFT weights load from files given on the command line."""
    from torchvision.models.optical_flow import raft_large

    from longvie.eval import vbench_metrics

    torch.save(torch.nn.Linear(768, 1).state_dict(), tmp_path / "head.pth")
    head = vbench_metrics._aesthetic_head(ScorerSettings(local_files_only=True, aesthetic_head=tmp_path / "head.pth"))
    assert head.weight.shape == (1, 768)
    torch.save(raft_large(weights=None).state_dict(), tmp_path / "raft.pth")
    model = vbench_metrics._raft(ScorerSettings(local_files_only=True, raft_weights=tmp_path / "raft.pth"))
    assert sum(p.numel() for p in model.parameters()) > 5_000_000


def test_musiq_plumbing_with_a_stand_in_metric():
    """pyiqa is optional (not installed in CI): the scorer's resizing and scaling with a recording metric."""
    from longvie.eval.vbench_metrics import MusiqScorer

    sizes = []

    def metric(x):
        sizes.append(tuple(x.shape))
        return torch.tensor([[40.0 + x.mean().item()]])

    frames = np.zeros((3, 600, 1024, 3), np.uint8)
    assert MusiqScorer(metric, "stand-in")(frames) == pytest.approx(0.40)
    assert sizes == [(1, 3, 300, 512)] * 3  # longer side scaled to 512, as VBench
