"""The image table: which "container image" runs which local command in the process kubelet.

There is no container runtime here: an image name maps to an argv that the kubelet starts as a
subprocess. An image mapped to ``null`` is known to be missing (ErrImagePull in every kubelet mode).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["PYTHON_PLACEHOLDER", "ImageTable", "default_images", "load_images"]

PYTHON_PLACEHOLDER = "{python}"

ImageTable = dict[str, list[str] | None]


def default_images() -> ImageTable:
    """The images every server knows: the fake model, under its local and its registry name."""
    fake_model = [sys.executable, "-m", "simulation_components.fake_model"]
    return {"fake_model:0.0.1": list(fake_model), "dots/fake-model:latest": list(fake_model)}


def load_images(path: str | Path | None) -> ImageTable:
    """The default table extended (and overridden) by a JSON file ``{image: [argv...] | null}``.

    ``{python}`` in an argv stands for the interpreter running the server.
    """
    table = default_images()
    if path is None:
        return table
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the image table must be a JSON object of image -> argv list")
    for image, argv in raw.items():
        if argv is None:
            table[image] = None
            continue
        if not isinstance(argv, list) or not argv or not all(isinstance(arg, str) for arg in argv):
            raise ValueError(f"{path}: image {image!r} must map to a non-empty list of strings or null")
        table[image] = [sys.executable if arg == PYTHON_PLACEHOLDER else arg for arg in argv]
    return table
