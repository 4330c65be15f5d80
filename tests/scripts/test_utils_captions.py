"""Caption refinement / clip captions with a tiny random-weight Qwen2.5-VL (plumbing only)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `utils` is a top-level folder of the repository
    sys.path.insert(0, str(REPO))

from longvie.controls.captioning import QwenCaptioner  # noqa: E402
from utils import qwen_caption_refine  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>"]
# A Qwen-style chat template reduced to what the captioner sends: one image or video, then text.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_qwen():
    """A random-weight Qwen2.5-VL (1 text layer, 1 vision block) with a character-level processor."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    vocab = {token: i for i, token in enumerate(SPECIAL + [chr(c) for c in range(32, 127)] + ["\n", "[UNK]"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    # Qwen2.5-VL's processor insists on a Qwen2 tokenizer class (transformers 4.x checks it).
    tokenizer_class = getattr(transformers, "Qwen2TokenizerFast", PreTrainedTokenizerFast)
    tokenizer = tokenizer_class(tokenizer_object=backend, unk_token="[UNK]", eos_token="<|im_end|>",
                                pad_token="<|endoftext|>", additional_special_tokens=SPECIAL)
    pixels = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=CHAT_TEMPLATE)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                         bos_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|im_end|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config).eval(), processor


def test_refine_and_describe(tiny_qwen):
    model, processor = tiny_qwen
    captioner = QwenCaptioner(model, processor, "cpu", max_new_tokens=6)
    image = Image.fromarray((np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8))
    refined = captioner.refine(image, "A rider on a horse.")
    assert isinstance(refined, str) and refined
    assert captioner.refine(image, "A rider on a horse.") == refined  # greedy: deterministic
    frames = (np.random.default_rng(1).random((81, 56, 84, 3)) * 255).astype(np.uint8)
    assert isinstance(captioner.describe(frames, num_frames=4), str)


def test_refine_captions_keeps_fields_and_rebases_paths(tmp_path):
    class Upper:
        def refine(self, image, caption):
            return caption.upper()

    entries = [{"text": "a horse", "depth": "depth_00.mp4", "track": "track_00.mp4", "extra": 1}]
    refined = qwen_caption_refine.refine_captions(entries, None, Upper())
    assert refined == [{"text": "A HORSE", "depth": "depth_00.mp4", "track": "track_00.mp4", "extra": 1}]
    moved = qwen_caption_refine.rebase_paths(refined[0], tmp_path / "cond", tmp_path / "edited")
    assert moved["depth"] == "../cond/depth_00.mp4" and moved["text"] == "A HORSE"


def test_caption_refine_script(tiny_qwen, tmp_path):
    model, processor = tiny_qwen
    model.save_pretrained(tmp_path / "qwen")
    processor.save_pretrained(tmp_path / "qwen")
    cond_dir = tmp_path / "cond"
    cond_dir.mkdir()
    cond = [{"text": f"clip {i}", "depth": f"depth_0{i}.mp4", "track": f"track_0{i}.mp4"} for i in range(2)]
    (cond_dir / "cond.json").write_text(json.dumps(cond))
    Image.new("RGB", (64, 48), (200, 30, 30)).save(cond_dir / "first.png")

    out = tmp_path / "edited" / "cond.json"
    args = ["--cond", str(cond_dir / "cond.json"), "--image", str(cond_dir / "first.png"), "--out", str(out),
            "--model", str(tmp_path / "qwen"), "--local-files", "--device", "cpu", "--max-new-tokens", "4"]
    assert qwen_caption_refine.main(args) == 0
    written = json.loads(out.read_text())
    assert [e["depth"] for e in written] == ["../cond/depth_00.mp4", "../cond/depth_01.mp4"]
    assert all(isinstance(e["text"], str) and e["text"] for e in written)
    assert not [p for p in out.parent.iterdir() if p.name != "cond.json"]  # no temp file left


def test_caption_refine_script_reports_bad_input(tmp_path, capsys):
    (tmp_path / "cond.json").write_text('{"text": "not a list"}')
    args = ["--cond", str(tmp_path / "cond.json"), "--image", str(tmp_path / "x.png"), "--out", str(tmp_path / "o.json")]
    assert qwen_caption_refine.main(args) == 1
    assert "JSON array" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_prepare_controls_with_caption_model(tiny_qwen, tmp_path, capsys):
    from longvie.media.video_io import write_video
    from utils import prepare_controls

    model, processor = tiny_qwen
    model.save_pretrained(tmp_path / "qwen")
    processor.save_pretrained(tmp_path / "qwen")
    frames = (np.random.default_rng(2).random((81, 56, 84, 3)) * 255).astype(np.uint8)
    write_video(tmp_path / "drive.mp4", frames)
    depth = np.broadcast_to(np.linspace(1, 2, 84, dtype=np.float32), (81, 56, 84))
    np.save(tmp_path / "depth.npy", depth)
    args = [str(tmp_path / "drive.mp4"), str(tmp_path / "cond"), "--depth-npy", str(tmp_path / "depth.npy"),
            "--grid", "6", "--keep-size", "--caption-model", str(tmp_path / "qwen"), "--local-files", "--device", "cpu"]
    assert prepare_controls.main(args) == 0
    assert "placeholders" not in capsys.readouterr().out
    cond = json.loads((tmp_path / "cond" / "cond.json").read_text())
    assert len(cond) == 1 and not cond[0]["text"].startswith("PLACEHOLDER")
