"""The image table: which "container image" runs which local command in the control plane's kubelet.

There is no container runtime here: an image name maps to an argv that the kubelet starts as a
subprocess. An image mapped to ``null`` is known to be missing (ErrImagePull in every kubelet mode, with
the message containerd gives for a reference the registry does not know); an image mapped to a string
fails to pull with that string as the registry's answer (``pull access denied...``, ``429 Too Many
Requests``...).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

__all__ = ["PYTHON_PLACEHOLDER", "ImageEntry", "ImageTable", "default_images", "full_reference",
           "image_reference_is_valid", "load_images", "pull_error"]

PYTHON_PLACEHOLDER = "{python}"

ImageEntry = list[str] | str | None
ImageTable = dict[str, ImageEntry]


def full_reference(image: str) -> str:
    """The reference containerd resolves: ``nginx`` is ``docker.io/library/nginx:latest``."""
    name = image
    first, _, rest = name.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}" if rest else f"docker.io/library/{name}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    return name


def pull_error(table: ImageTable, image: str) -> str | None:
    """Why pulling ``image`` fails, worded as containerd words it; ``None`` when the table runs it."""
    entry = table.get(image)
    if isinstance(entry, list):
        return None
    if isinstance(entry, str):
        return entry
    reference = full_reference(image)
    return (f'rpc error: code = NotFound desc = failed to pull and unpack image "{reference}": failed to '
            f'resolve reference "{reference}": {reference}: not found')


def default_images() -> ImageTable:
    """The images every kubelet knows: the fake model, under its local and its registry name."""
    fake_model = [sys.executable, "-m", "simulation_components.fake_model"]
    return {"fake_model:0.0.1": list(fake_model), "dots/fake-model:latest": list(fake_model)}


def load_images(path: str | Path | None) -> ImageTable:
    """The default table extended (and overridden) by a JSON file ``{image: [argv...] | "pull error" | null}``.

    ``{python}`` in an argv stands for the interpreter running the kubelet.
    """
    table = default_images()
    if path is None:
        return table
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the image table must be a JSON object of image -> argv list")
    for image, argv in raw.items():
        if argv is None or isinstance(argv, str):
            table[image] = argv
            continue
        if not isinstance(argv, list) or not argv or not all(isinstance(arg, str) for arg in argv):
            raise ValueError(f"{path}: image {image!r} must map to a non-empty list of strings, a string or null")
        table[image] = [sys.executable if arg == PYTHON_PLACEHOLDER else arg for arg in argv]
    return table


# The grammar of a docker reference (distribution/reference), as the kubelet parses it.
_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = re.compile(rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")


def image_reference_is_valid(image: str) -> bool:
    """Whether the kubelet could parse ``image`` as a docker reference (else: InvalidImageName)."""
    if not image or len(image) > 255 + 128 + 100:
        return False
    name = image
    if "@" in name:
        name, digest = name.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            return False
    components = name.split("/")
    last = components[-1]
    if ":" in last:
        last, tag = last.split(":", 1)
        if not _TAG.fullmatch(tag):
            return False
        components[-1] = last
    if len(components) > 1 and ("." in components[0] or ":" in components[0] or components[0] == "localhost"):
        if not _DOMAIN.fullmatch(components[0]):
            return False
        components = components[1:]
    if len("/".join(components)) > 255:
        return False
    return all(_PATH_COMPONENT.fullmatch(component) for component in components)
