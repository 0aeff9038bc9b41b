"""The CUT3R model code of another git revision, importable next to the current one (for side-by-side speed
comparisons: `bench_cut3r --before REV`).

The files `moonseg3r_ros/core/cut3r/config.py` and `moonseg3r_ros/core/cut3r/modeling/*.py` of REV are written
into a fresh package in a temporary folder (they only import each other, torch and the standard library) and
imported under a unique name; the current code is not touched.
"""
from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

CUT3R_DIR = "moonseg3r_ros/core/cut3r"


def repository_root() -> Path:
    """The git work tree this module lives in (raises RuntimeError outside one, e.g. an installed copy)."""
    here = Path(__file__).resolve().parent
    result = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"not in a git work tree ({here}): {result.stderr.strip()}")
    return Path(result.stdout.strip())


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def import_revision(revision: str) -> ModuleType:
    """REV -> the package of its CUT3R code, with `config.Cut3rConfig` and `modeling.cut3r.Cut3r`."""
    root = repository_root()
    commit = _git(root, "rev-parse", "--verify", f"{revision}^{{commit}}").strip()
    names = [name for name in _git(root, "ls-tree", "--name-only", commit, f"{CUT3R_DIR}/modeling/").split()
             if name.endswith(".py")]
    if not names:
        raise RuntimeError(f"{revision} has no {CUT3R_DIR}/modeling/")
    package = f"cut3r_rev_{commit[:12]}"
    folder = Path(tempfile.mkdtemp(prefix="cut3r_rev_")) / package
    (folder / "modeling").mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    for name in names + [f"{CUT3R_DIR}/config.py"]:
        target = folder / Path(name).relative_to(CUT3R_DIR)
        target.write_text(_git(root, "show", f"{commit}:{name}"))
    sys.path.insert(0, str(folder.parent))
    try:
        module = importlib.import_module(package)
        importlib.import_module(f"{package}.config")
        importlib.import_module(f"{package}.modeling.cut3r")
    finally:
        sys.path.remove(str(folder.parent))
    module.commit = commit  # type: ignore[attr-defined]
    return module


def model_of_revision(revision: str, model: nn.Module) -> nn.Module:
    """REV's Cut3r with the same configuration, sharing `model`'s parameter tensors (no extra weight memory)."""
    package = import_revision(revision)
    config = package.config.Cut3rConfig(**vars(model.config))
    with torch.device("meta"):
        other = package.modeling.cut3r.Cut3r(config)
    other.load_state_dict(model.state_dict(), strict=True, assign=True)
    other.commit = package.commit
    return other.eval()
