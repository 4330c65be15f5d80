"""Latent cache: encode every clip once with the frozen VAE / umT5 / CLIP, then train from it.

    python -m longvie.train.cache --config configs/train_stage1.yaml --cache-dir data/cache_352x640
    python -m longvie.train --config configs/train_stage1.yaml --cache-dir data/cache_352x640

(or ``python -m longvie.train ... --build-cache --cache-dir DIR``: build, then train). With several
processes (accelerate launch / torchrun) every rank encodes its share of the clips.

One file per clip, ``DIR/00000042.safetensors``, holds the clean encodings (clip latents, text and
CLIP embeddings, image-condition latents, dense and sparse control inputs) plus what the
degradations need in pixels: the first frame and up to ``history_max_frames`` frames ending at it.
Degradations stay random per step: a degraded first frame or history is re-encoded from those
pixels, and a clip whose plan degrades its depth video reads that video again (p = 0.1 in stage 1).
``DIR/manifest.json`` records the settings; a cache built for another size is refused.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from ..media.atomic import atomic_save_tensors, atomic_write_json
from ..media.video_io import fit_frames
from .data import ClipRecord, DataError, SkippedClip, history_available, load_clip
from .degradations import DegradationSettings, degrade_depth, sample_plan, sample_rng
from .outputs import claim_cache_dir, mark_cache_dir

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LATENT_KEYS = ("latents", "text_embeds", "image_embeds", "image_latents", "dense_latents", "sparse_latents")
CACHE_HISTORY_FRAMES = 16  # the most any stage uses (SPEC §6); cached for every clip


def cache_settings(config: dict) -> dict:
    """What a cache depends on; a mismatch with the training config means: rebuild."""
    data, model = config["data"], config["model"]
    return {"height": data["height"], "width": data["width"], "num_frames": data["num_frames"],
            "resize": data["resize"], "metadata": str(Path(data["metadata"]).resolve()),
            "base_model_dir": str(Path(model["base_model_dir"]).resolve()),
            "weight_dtype": model["weight_dtype"], "vae_dtype": model["vae_dtype"],
            "history_frames": CACHE_HISTORY_FRAMES}


def entry_path(cache_dir, index: int) -> Path:
    return Path(cache_dir) / f"{index:08d}.safetensors"


@torch.no_grad()
def build_latent_cache(config: dict, encoder, accelerator=None) -> Path:
    """Encode every clip of ``data.metadata`` into ``data.cache_dir`` (existing entries are kept).

    Args:
        encoder: a :class:`longvie.train.inputs.InputEncoder` on the device.
        accelerator: to split the clips over processes (optional).
    """
    from .data import read_metadata

    data = config["data"]
    cache_dir = Path(data["cache_dir"])
    records = read_metadata(data["metadata"], data.get("root"))
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    if accelerator is None or accelerator.is_main_process:
        mark_cache_dir(cache_dir)  # first: the folder is ours from now on (longvie.train.outputs)
    else:
        cache_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for index in range(rank, len(records), world):
        path = entry_path(cache_dir, index)
        if path.is_file():
            continue
        record = records[index]
        try:
            clip = load_clip(record, data["num_frames"], data["height"], data["width"], CACHE_HISTORY_FRAMES,
                             data["resize"])
        except DataError as err:
            if not data["skip_bad"]:
                raise
            logger.warning("cache: skipping clip %d (%s): %s", index, record.describe(), err)
            failed.append(index)
            continue
        sample = {name: torch.from_numpy(clip[name]) for name in ("video", "depth", "track")}
        sample["text"] = record.text
        tensors = {k: v.cpu() for k, v in encoder.clean(sample).items()}
        tensors["first_frame"] = sample["video"][0].contiguous()
        tensors["history"] = torch.from_numpy(clip["history"]).contiguous()
        atomic_save_tensors(path, tensors, metadata={"text": record.text, "source": record.describe()})
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if accelerator is None or accelerator.is_main_process:
        atomic_write_json(cache_dir / MANIFEST, {**cache_settings(config), "clips": len(records)})
    if failed:
        logger.warning("cache: %d clip(s) of this process could not be read and are not cached", len(failed))
    return cache_dir


class CachedClipDataset(Dataset):
    """Like :class:`longvie.train.data.ClipDataset`, from a latent cache.

    Items hold the cached latents (``latents``, ``text_embeds``, ...), ``first_frame`` and
    ``history`` pixels, and — only when the plan degrades the depth video — ``depth`` pixels.
    """

    def __init__(self, cache_dir, records: list[ClipRecord], settings: DegradationSettings, seed: int,
                 data_cfg: dict, skip_bad: bool = False):
        self.cache_dir, self.records, self.settings, self.seed = Path(cache_dir), records, settings, seed
        self.data_cfg, self.skip_bad = data_cfg, skip_bad
        manifest_path = self.cache_dir / MANIFEST
        if not manifest_path.is_file():
            raise DataError(f"{self.cache_dir}: not a latent cache (no {MANIFEST}); build it with "
                            "`python -m longvie.train.cache --config ... --cache-dir DIR`")
        manifest = json.loads(manifest_path.read_text())
        for key in ("height", "width", "num_frames", "resize"):
            if manifest.get(key) != data_cfg[key]:
                raise DataError(f"{self.cache_dir} was built with {key}={manifest.get(key)}, this run uses "
                                f"{data_cfg[key]}; rebuild the cache into another folder")
        if manifest.get("clips") != len(records):
            raise DataError(f"{self.cache_dir} holds {manifest.get('clips')} clips, the metadata {len(records)}; "
                            "rebuild the cache for this metadata")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        record = self.records[index]
        plan = sample_plan(sample_rng(self.seed, epoch, index), self.settings, history_available(record))
        path = entry_path(self.cache_dir, index)
        if not path.is_file():
            if self.skip_bad:
                logger.warning("skipping clip %d (%s): not in the cache", index, record.describe())
                return SkippedClip(index, record.describe(), f"{path}: not in the latent cache")
            raise DataError(f"{path}: missing from the latent cache (clip {index}, {record.describe()}); "
                            "rebuild the cache or set data.skip_bad")
        with safe_open(str(path), framework="pt") as handle:  # latents keep their batch dimension (1, ...)
            item = {k: handle.get_tensor(k) for k in handle.keys()}
        history = item.pop("history")
        plan.history_frames = min(plan.history_frames, len(history) // 4 * 4)
        item["history"] = history[len(history) - plan.history_frames:]
        if plan.depth_ops:
            from ..media.video_io import read_video

            depth = fit_frames(read_video(record.depth, max_frames=self.data_cfg["num_frames"]),
                               self.data_cfg["height"], self.data_cfg["width"], self.data_cfg["resize"])
            item["depth"] = degrade_depth(torch.from_numpy(depth), plan.depth_ops)
        item.update(index=index, epoch=epoch, text=record.text, plan=plan)
        return item


def main(argv=None) -> int:
    from .command import run_cli

    return run_cli(_run, argv)


def _run(argv, output: dict) -> int:
    from .config import add_config_arguments, config_from_args
    from .presets import resolve_preset
    from .runtime import build_encoder, make_accelerator

    parser = argparse.ArgumentParser(prog="python -m longvie.train.cache",
                                     description="Precompute VAE latents and text/CLIP embeddings for training.")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if not args.cache_dir:
        parser.error("--cache-dir is required")
    try:
        config = config_from_args(args)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    claim_cache_dir(args.cache_dir)  # before any model loads: never into a folder of the user's files
    output["dir"] = args.cache_dir
    accelerator = make_accelerator(config)
    with accelerator.main_process_first():
        config = resolve_preset(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    encoder = build_encoder(config, accelerator.device)
    cache_dir = build_latent_cache(config, encoder, accelerator)
    if accelerator.is_main_process:
        print(f"latent cache ready: {cache_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
