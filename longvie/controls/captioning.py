"""Clip captions with a vision-language model: Qwen2.5-VL-Instruct (arXiv 2502.13923) via transformers.

Two jobs, as in LongVie (SPEC §5): describe a clip from its frames (one prompt per clip), and
rewrite an existing caption so that it matches a new (e.g. edited) first frame — what upstream's
``utils/qwen_caption_refine.py`` does with Qwen2.5-VL-7B-Instruct.

torch and transformers are imported inside the functions so that the scripts' --help stays instant.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .model_loading import dtype_kwargs, from_pretrained_or_explain, pick_device

DEFAULT_CAPTION_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"

# Placeholder prompts written by utils/prepare_controls.py when no caption model is given. Both marks
# are set, so either identifies one: the cond.json entry has ``"placeholder": true`` and its text starts
# with PLACEHOLDER_PREFIX. The sampler refuses them unless told otherwise (--allow-placeholder-prompts).
PLACEHOLDER_KEY = "placeholder"
PLACEHOLDER_PREFIX = "PLACEHOLDER for clip "
PLACEHOLDER_CAPTION = (PLACEHOLDER_PREFIX + "{index}: replace this text with a description of the clip "
                       "(scene, subjects, motion, camera) before sampling, and delete the \"placeholder\" key.")


def placeholder_entry_text(index: int) -> str:
    """The placeholder prompt of clip ``index``."""
    return PLACEHOLDER_CAPTION.format(index=index)


def is_placeholder_prompt(entry: dict | str) -> bool:
    """Whether a cond.json entry (or a prompt text) is a placeholder written by prepare_controls.

    An entry is a placeholder when ``entry["placeholder"]`` is true or its ``text`` starts with
    :data:`PLACEHOLDER_PREFIX` (after leading whitespace); a bare string by the prefix alone.
    """
    if isinstance(entry, dict):
        if entry.get(PLACEHOLDER_KEY) is True:
            return True
        entry = entry.get("text", "")
    return isinstance(entry, str) and entry.lstrip().startswith(PLACEHOLDER_PREFIX)

REFINE_INSTRUCTION = (
    "Here is a caption written for a video. Rewrite it so that it describes the scene in this image "
    "instead: keep the caption's style, tone, length and its description of motion and camera movement, "
    "but change subjects, objects, colours and setting wherever the image shows something different. "
    "Answer with the rewritten caption only.\n\nCaption: {caption}"
)
DESCRIBE_INSTRUCTION = (
    "Describe this video in one detailed paragraph for a text-to-video model: the setting, the main "
    "subjects and what they do, the camera movement, the lighting and the atmosphere. Begin with "
    "\"The video\" and answer with the description only."
)


class QwenCaptioner:
    """Greedy-decoding captioner around a ``Qwen2_5_VLForConditionalGeneration`` and its processor."""

    def __init__(self, model, processor, device="cpu", max_new_tokens: int = 512):
        import torch

        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(cls, model_id: str = DEFAULT_CAPTION_MODEL, local_files_only: bool = False,
                        device: str | None = None, max_new_tokens: int = 512) -> "QwenCaptioner":
        """Load a hub id or local directory (bfloat16 on GPU; the 7B model needs ~17 GB of GPU memory)."""
        import torch
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        device = pick_device(device)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        processor = from_pretrained_or_explain(AutoProcessor, model_id, "the Qwen2.5-VL processor", local_files_only)
        model = from_pretrained_or_explain(Qwen2_5_VLForConditionalGeneration, model_id, "Qwen2.5-VL",
                                           local_files_only, **dtype_kwargs(dtype))
        return cls(model, processor, device, max_new_tokens)

    def _generate(self, media_type: str, instruction: str, **media) -> str:
        import torch

        messages = [{"role": "user", "content": [{"type": media_type}, {"type": "text", "text": instruction}]}]
        prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = self.processor(text=[prompt], return_tensors="pt", **media).to(self.device)
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()

    def refine(self, image: Image.Image, caption: str) -> str:
        """Rewrite ``caption`` to match ``image``; the original caption if the model returns nothing."""
        text = self._generate("image", REFINE_INSTRUCTION.format(caption=caption), images=[image.convert("RGB")])
        return text or caption

    def describe(self, frames: np.ndarray, num_frames: int = 16) -> str:
        """Caption a clip from ``num_frames`` evenly spaced frames of (T, H, W, 3) uint8 ``frames``."""
        num_frames = max(2, min(num_frames, len(frames)) // 2 * 2)  # Qwen2.5-VL folds frame pairs
        picks = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
        return self._generate("video", DESCRIBE_INSTRUCTION, videos=[np.ascontiguousarray(frames[picks])])
