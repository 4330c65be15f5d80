"""Render docs/overview.png, the README's picture: what goes into LongVie 2 and how clips chain.

    python scripts/make_overview_figure.py                   # writes docs/overview.png
    python scripts/make_overview_figure.py --out /tmp/o.png --example /tmp/ex   # an example rendered before

The inputs are the repository's own synthetic example (``python -m longvie.examples.synthetic``,
2 clips at 176x320, 81 frames per clip), so the figure is reproducible from code: the first frame,
depth frames and point-track frames of each clip, each clip's prompt, and the clip-by-clip chaining
of SPEC §4 (clip k starts from clip k-1's last frame, sees its last 8 frames as history, and starts
from the same noise tensor). No model runs: the "output" strip shows the synthetic scene's rendered
ground truth (reference.mp4), which stands in for a generated clip and is labelled so.
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402
from PIL import Image  # noqa: E402

from longvie.examples.synthetic import make_synthetic_example  # noqa: E402
from longvie.media.video_io import read_video  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIPS, HEIGHT, WIDTH, FRAMES = 2, 176, 320, 81
SHOWN = (0, 40, 80)  # frames of each clip shown as thumbnails
HISTORY = 8  # SPEC §4: the next clip sees the previous clip's last 8 frames

INK, MUTED = "#1f2933", "#52606d"
COLOURS = {"input": "#2f6fb3", "control": "#7a4fb3", "model": "#c0392b", "output": "#1e8449", "chain": "#d35400"}


def load_example(folder: Path) -> dict:
    cond = json.loads((folder / "cond.json").read_text())
    reference = read_video(folder / "reference.mp4")
    clips = []
    for index, entry in enumerate(cond):
        start = index * (FRAMES - 1)
        clips.append({
            "text": entry["text"],
            "depth": read_video(folder / entry["depth"]),
            "track": read_video(folder / entry["track"]),
            "output": reference[start:start + FRAMES],
        })
    first = np.asarray(Image.open(folder / "first.png").convert("RGB"))
    return {"first": first, "clips": clips, "total_frames": len(reference)}


def image_axes(fig, left, bottom, width, height, image, border=None, title=None, title_colour=INK):
    ax = fig.add_axes([left, bottom, width, height])
    ax.imshow(image, interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(border or "#9aa5b1")
        spine.set_linewidth(2.0 if border else 0.8)
    if title:
        ax.set_title(title, fontsize=8.5, color=title_colour, pad=2)
    return ax


def box(fig, left, bottom, width, height, colour, text=None, fontsize=9.5, alpha=0.08, text_colour=None):
    patch = FancyBboxPatch((left, bottom), width, height, boxstyle="round,pad=0.004,rounding_size=0.008",
                           transform=fig.transFigure, facecolor=colour, alpha=alpha, edgecolor="none", zorder=0)
    fig.patches.append(patch)
    edge = FancyBboxPatch((left, bottom), width, height, boxstyle="round,pad=0.004,rounding_size=0.008",
                          transform=fig.transFigure, facecolor="none", edgecolor=colour, linewidth=1.2, zorder=0)
    fig.patches.append(edge)
    if text:
        fig.text(left + width / 2, bottom + height / 2, text, ha="center", va="center", fontsize=fontsize,
                 color=text_colour or colour, fontweight="bold")


def arrow(fig, start, end, colour, text=None, text_at=None, rad=0.0, fontsize=9, width=1.6, ha="center"):
    patch = FancyArrowPatch(start, end, transform=fig.transFigure, arrowstyle="-|>", mutation_scale=14,
                            color=colour, linewidth=width, connectionstyle=f"arc3,rad={rad}", zorder=5)
    fig.patches.append(patch)
    if text:
        x, y = text_at or ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        fig.text(x, y, text, ha=ha, va="center", fontsize=fontsize, color=colour, fontweight="bold",
                 bbox=dict(facecolor="white", edgecolor="none", pad=1.0, alpha=0.9), zorder=6)


def noise_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.standard_normal((HEIGHT // 8, WIDTH // 8, 3))
    small = np.clip(127.5 + 50 * small, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((WIDTH, HEIGHT), Image.NEAREST))


def draw(example: dict, out: Path) -> None:
    fig_w, fig_h = 16.0, 8.6
    aspect = fig_w / fig_h * HEIGHT / WIDTH  # height of a thumbnail, in figure fractions, per unit of width
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=100)
    fig.patch.set_facecolor("white")
    fig.text(0.012, 0.968, "LongVie 2: one image + per-clip prompt, depth and point tracks  \u2192  minutes of video, "
             "clip by clip", fontsize=15, fontweight="bold", color=INK, va="center")
    fig.text(0.012, 0.93, "The repository's synthetic example (python -m longvie.examples.synthetic, 2 clips, "
             f"{HEIGHT}x{WIDTH}, {FRAMES} frames per clip at 16 fps). Every clip has its own prompt, depth video "
             "(dense control) and track video (sparse control).", fontsize=9.5, color=MUTED, va="center")

    thumb_w, gap, label_w = 0.086, 0.006, 0.09
    thumb_h = thumb_w * aspect
    panel_w = label_w + 3 * thumb_w + 2 * gap
    lefts = [0.2, 0.2 + panel_w + 0.036]
    rows = {"title": 0.875, "prompt": 0.845, "depth": 0.655, "track": 0.545, "model": 0.455, "output": 0.30}
    panel_bottom = 0.215

    # Left column: the first frame and the noise.
    first_w = 0.15
    first_y = rows["depth"] + 0.02
    image_axes(fig, 0.02, first_y, first_w, first_w * aspect, example["first"],
               border=COLOURS["input"], title="first.png: clip 0's input image", title_colour=COLOURS["input"])
    noise_w, noise_y = 0.10, rows["output"] + 0.02
    image_axes(fig, 0.045, noise_y, noise_w, noise_w * aspect, noise_image(),
               border=COLOURS["chain"], title="noise \u03b5 drawn once from the seed", title_colour=COLOURS["chain"])

    model_boxes, output_xs = [], []
    for k, (left, clip) in enumerate(zip(lefts, example["clips"])):
        start = k * (FRAMES - 1)
        box(fig, left - 0.01, panel_bottom, panel_w + 0.018, rows["title"] + 0.03 - panel_bottom, "#7b8794", alpha=0.04)
        fig.text(left, rows["title"], f"clip {k}: frames {start}\u2013{start + FRAMES - 1} of the video", fontsize=12,
                 fontweight="bold", color=INK, va="center")
        thumbs_x = [left + label_w + i * (thumb_w + gap) for i in range(3)]
        # Prompt.
        fig.text(left, rows["prompt"], "prompt", fontsize=10, fontweight="bold", color=COLOURS["input"], va="top")
        wrapped = "\n".join(textwrap.wrap(f"\u201c{clip['text']}\u201d", 66))
        fig.text(thumbs_x[0], rows["prompt"], wrapped, fontsize=9, color=INK, va="top", style="italic")
        # Controls.
        for row, name, label in (("depth", "depth", "depth_%02d.mp4\ndense control\n(near = dark)" % k),
                                 ("track", "track", "track_%02d.mp4\nsparse control\n(point tracks)" % k)):
            fig.text(left, rows[row] + thumb_h / 2, label, fontsize=9, color=COLOURS["control"], va="center",
                     fontweight="bold")
            for i, t in enumerate(SHOWN):
                image_axes(fig, thumbs_x[i], rows[row], thumb_w, thumb_h, clip[name][t],
                           title=f"frame {t}" if row == "depth" else None)
        # Model.
        model_left, model_w, model_h = thumbs_x[0], 3 * thumb_w + 2 * gap, 0.05
        box(fig, model_left, rows["model"], model_w, model_h, COLOURS["model"],
            "Wan2.1-I2V-14B + dense & sparse control branches\n50 denoising steps, CFG 5", fontsize=9, alpha=0.10)
        model_boxes.append((model_left, rows["model"], model_w, model_h))
        centre = model_left + model_w / 2
        arrow(fig, (centre, rows["track"] - 0.004), (centre, rows["model"] + model_h + 0.006), COLOURS["control"])
        arrow(fig, (centre, rows["model"] - 0.006), (centre, rows["output"] + thumb_h + 0.028), COLOURS["model"])
        # Output.
        fig.text(left, rows["output"] + thumb_h / 2, "clip_%03d.mp4\n81 frames out\n(ground truth\nshown)" % k,
                 fontsize=9, color=COLOURS["output"], va="center", fontweight="bold")
        for i, t in enumerate(SHOWN):
            image_axes(fig, thumbs_x[i], rows["output"], thumb_w, thumb_h, clip["output"][t],
                       border=COLOURS["output"], title=f"frame {t}", title_colour=COLOURS["output"])
        output_xs.append(thumbs_x)

    # Clip 0's inputs: the first image and the seed's noise.
    m0, m1 = model_boxes
    arrow(fig, (0.02 + first_w, first_y + first_w * aspect * 0.3), (m0[0], m0[1] + m0[3] * 0.7), COLOURS["input"],
          rad=0.2)
    arrow(fig, (0.045 + noise_w, noise_y + noise_w * aspect * 0.6), (m0[0], m0[1] + m0[3] * 0.25), COLOURS["chain"],
          rad=-0.2)

    # Chaining into clip 1: last frame -> input image, last 8 frames -> history, the same noise.
    xs0 = output_xs[0]
    out_right = xs0[2] + thumb_w
    arrow(fig, (out_right, rows["output"] + thumb_h * 0.8), (m1[0], m1[1] + m1[3] * 0.8), COLOURS["chain"],
          "\u2460 last frame\n\u2192 input image", text_at=(lefts[1] - 0.004, rows["model"] + 0.062),
          rad=-0.25, ha="left", fontsize=8.5)
    arrow(fig, (out_right, rows["output"] + thumb_h * 0.35), (m1[0], m1[1] + m1[3] * 0.2), COLOURS["chain"],
          f"\u2461 last {HISTORY} frames\n\u2192 history", text_at=(lefts[1] - 0.004, rows["model"] - 0.012),
          rad=0.15, ha="left", fontsize=8.5)
    fig.text(xs0[2] + thumb_w / 2, rows["output"] - 0.022, f"frames {FRAMES - HISTORY}\u2013{FRAMES - 1}: history",
             ha="center", fontsize=8.5, color=COLOURS["chain"], fontweight="bold")
    y_noise = panel_bottom + 0.025
    right = m1[0] + m1[2] + 0.014
    fig.lines.append(plt.Line2D([0.095, 0.095], [noise_y - 0.004, y_noise], transform=fig.transFigure,
                                color=COLOURS["chain"], linewidth=1.6, linestyle="--"))
    fig.lines.append(plt.Line2D([0.095, right], [y_noise, y_noise], transform=fig.transFigure,
                                color=COLOURS["chain"], linewidth=1.6, linestyle="--"))
    arrow(fig, (right, y_noise), (m1[0] + m1[2], m1[1] + m1[3] * 0.5), COLOURS["chain"], rad=0.15)
    fig.text(lefts[1], y_noise - 0.017, "\u2462 unified noise: clip 1 starts from the same \u03b5 as clip 0",
             fontsize=9, color=COLOURS["chain"], fontweight="bold", va="center")

    total = example["total_frames"]
    fig.text(0.012, 0.178, "Chaining (SPEC \u00a74): clip k \u2460 starts from clip k\u22121's last frame, \u2461 sees its last "
             f"{HISTORY} frames as history tokens and \u2462 starts from the same noise tensor (unified noise); "
             "clip 0 starts from first.png and the seed's noise.", fontsize=9.5, color=COLOURS["chain"], fontweight="bold")
    fig.text(0.012, 0.14, f"video.mp4 = the clips stitched: 81 + (n\u22121)\u00b780 frames ({total} here; clip k's first "
             "frame continues clip k\u22121's last frame, so it is dropped). Any number of clips chain the same way, "
             "each with its own prompt and controls.", fontsize=9.5, color=INK)
    fig.text(0.012, 0.1, "bash sample_longvideo.sh --preset tiny   # this chain on a CPU, tiny random-weight model"
             "        bash sample_longvideo.sh   # the released weights", fontsize=9.5, color=MUTED, family="monospace")
    fig.text(0.012, 0.045, "Made by scripts/make_overview_figure.py from the synthetic example; no model ran for "
             "this picture (the output frames are the rendered scene).", fontsize=8, color=MUTED)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor="white")
    plt.close(fig)
    # A 256-colour palette keeps the PNG small (the page is mostly flat colour and text).
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    image.save(tmp, format="PNG", optimize=True)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "overview.png", help="PNG to write")
    parser.add_argument("--example", type=Path, default=None,
                        help="read an example already rendered with `python -m longvie.examples.synthetic DIR --clips 2 "
                             f"--height {HEIGHT} --width {WIDTH}` instead of rendering one into a temporary folder")
    args = parser.parse_args(argv)
    if args.example is not None:
        if not (args.example / "cond.json").is_file() or not (args.example / "reference.mp4").is_file():
            parser.error(f"--example {args.example} has no cond.json and reference.mp4; render it with "
                         f"python -m longvie.examples.synthetic {args.example} --clips {CLIPS} --height {HEIGHT} --width {WIDTH}")
        example = load_example(args.example)
    else:
        with tempfile.TemporaryDirectory(prefix="longvie_overview_") as tmp:
            make_synthetic_example(tmp, CLIPS, HEIGHT, WIDTH, FRAMES)
            example = load_example(Path(tmp))
    draw(example, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
