"""Whether a module is an installed package rather than a folder of this repository (used by test_launch.py)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Install locations that may lie inside the repository: the venv and colcon's install space.
INSTALLED = (Path(sys.prefix).resolve(), REPO_ROOT / "install")


def _in_repository_sources(place: str) -> bool:
    path = Path(place).resolve()
    return path.is_relative_to(REPO_ROOT) and not any(path.is_relative_to(p) for p in INSTALLED)


def installed_module(name: str) -> str:
    """Why `name` is not the installed package ('' when it is): a missing module, or one that resolves to this
    repository (its own launch/ folder is a namespace package named `launch` when the root is on sys.path)."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return f"{name} is not installed"
    places = [spec.origin] if spec.origin else list(spec.submodule_search_locations or [])
    if not spec.origin or any(_in_repository_sources(p) for p in places if p):
        return f"`import {name}` finds {places} (not the installed package)"
    return ""
