"""The CPU-only install keeps CPU wheels (issue 19, item 6): setup.py's torchvision lower bound is the
release paired with its torch lower bound, so a CPU torch/torchvision pair installed first (from
https://download.pytorch.org/whl/cpu) satisfies `pip install -e .` as it is. With a torchvision bound
above the pair, pip upgrades torchvision from PyPI, which pulls a CUDA torch build (several GB)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def install_requires() -> dict[str, str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    requires = next(k.value for k in call.keywords if k.arg == "install_requires")
    found = {}
    for element in requires.elts:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)(;.*)?", element.value)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_torch_and_torchvision_lower_bounds_are_a_released_pair():
    bounds = install_requires()
    torch_major, torch_minor = (int(x) for x in bounds["torch"].split(".")[:2])
    vision_major, vision_minor = (int(x) for x in bounds["torchvision"].split(".")[:2])
    # Since torch 2.0 <-> torchvision 0.15 the minors move together: 2.13 <-> 0.28, 2.14 <-> 0.29
    # (torchvision 0.28.0's metadata: Requires-Dist: torch==2.13.0).
    assert torch_major == 2 and vision_major == 0
    assert vision_minor == torch_minor + 15, (bounds["torch"], bounds["torchvision"])
