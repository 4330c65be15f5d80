"""LongVie 2 training: three stages on accelerate (+ DeepSpeed on GPUs). SPEC §6.

    python -m longvie.train --config configs/train_stage1.yaml            # or: longvie-train ...
    python -m longvie.train --preset tiny --stage 1 --max-steps 30 --output /tmp/tiny1

Modules: ``config`` (stage YAML + overrides), ``data`` (metadata, clips, sample order),
``degradations`` (seeded transforms), ``inputs`` (sample -> denoiser inputs), ``losses``,
``trainer`` (the loop), ``checkpointing``, ``metrics`` (CSV/TensorBoard), ``cache`` (latent cache),
``metadata`` (metadata from prepare_controls outputs), ``presets`` (tiny), ``runtime`` (accelerator
and frozen encoders), ``command`` (the command lines' one error handler).

May import: ``models``, ``weights``, ``sampling``, ``media``, ``controls``, ``presets``, ``examples``.
"""


def main(argv=None) -> int:
    """Console entry point ``longvie-train`` (same as ``python -m longvie.train``)."""
    import importlib

    return importlib.import_module("longvie.train.__main__").main(argv)
