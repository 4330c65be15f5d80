"""Fixtures shared by the training tests."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    """Tiny assets (random checkpoints + synthetic clips + metadata) in a temporary folder, exposed to
    the training code through LONGVIE_TINY_DIR for the module's tests (conftest keeps torch to one thread)."""
    root = tmp_path_factory.mktemp("tiny_train")
    old_env = os.environ.get("LONGVIE_TINY_DIR")
    os.environ["LONGVIE_TINY_DIR"] = str(root)
    from longvie.train.presets import prepare_tiny_assets

    base_dir, metadata = prepare_tiny_assets(root)
    yield {"root": root, "base_dir": base_dir, "metadata": metadata}
    if old_env is None:
        os.environ.pop("LONGVIE_TINY_DIR", None)
    else:
        os.environ["LONGVIE_TINY_DIR"] = old_env
