"""Reading files a user was handed (checkpoints, weights, maps, masks) without running anything from them.

`load_torch_file` reads a `torch.save` file (zip or legacy format) with torch's `weights_only` unpickler:
tensors, storages and plain containers come from torch's own allow-list; `argparse.Namespace` and
`types.SimpleNamespace` (training arguments) are allowed as data. An object of any other class named in the
pickle (for example a Hydra/OmegaConf training config) becomes a `PickledRecord`: the class is never imported,
the record only holds the attributes the file gives it. A pickle may create such objects (NEWOBJ + BUILD, which
set attributes) but never call anything that is not on torch's allow-list: a call of any other name
(`os.system`, `builtins.exec`, `torch._utils._import_dotted_name`, ...) raises `RefusedFileError` naming it,
before anything runs. Modules torch blocks outright (os, sys, posix, nt) are refused too. The one exception to
"no calls": `builtins.getattr(record_class, 'name')`, which protocol-2 pickles use for a reference to a method
(ultralytics 8.0's `Segment.detect = Detect.forward`), gives another record class; getattr on anything that is
not a record class is refused.

`load_npz` is `np.load(..., allow_pickle=False)` with the same kind of error for object arrays.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
import pickletools
import re
import threading
import types
import zipfile
from typing import Any, BinaryIO

import numpy as np
import torch

ALLOWED_CLASSES = (argparse.Namespace, types.SimpleNamespace)  # read as data (attribute dicts)
_LEGACY_PICKLES = 5  # magic, protocol, sys_info, the object, storage keys
_ALLOW_LIST_LOCK = threading.Lock()  # torch's safe-globals set is process-wide: one load at a time edits it


class RefusedFileError(ValueError):
    """A file was refused because reading it would run code or build objects that are not plain data."""


class PickledRecord:
    """The attributes of an object whose class the file names but this package never imports."""

    pickle_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "PickledRecord":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Reached only when the pickle *calls* the name (REDUCE): refuse instead of running anything.
        raise RefusedFileError(f"the file calls {self.pickle_name}, which is not on the allow-list")

    def __repr__(self) -> str:
        return f"PickledRecord({self.pickle_name}, {vars(self)!r})"


def _record_class(name: str) -> type:
    return type(f"PickledRecord[{name}]", (PickledRecord,), {"pickle_name": name})


def _record_attribute(owner: Any, name: Any) -> type:
    """`builtins.getattr` inside a pickle: only `RecordClass.name` (a method reference), itself a record class."""
    if isinstance(owner, type) and issubclass(owner, PickledRecord) and isinstance(name, str):
        return _record_class(f"{owner.pickle_name}.{name}")
    raise RefusedFileError("the file calls builtins.getattr on something that is not a record of a never-imported "
                           "class")


def _globals_in_pickle(stream: BinaryIO) -> set[str]:
    """Names (`module.name`) of the GLOBAL opcodes of one pickle read from `stream` (static, nothing runs)."""
    names = set()
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name == "GLOBAL" and isinstance(arg, str):
            module, _, name = arg.partition(" ")
            names.add(_python3_name(module, name))
    return names


def _python3_name(module: str, name: str) -> str:
    """The name torch's unpickler looks up: protocol-2 pickles may carry Python 2 names (__builtin__.exec)."""
    from torch._utils import IMPORT_MAPPING, NAME_MAPPING

    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def pickle_globals(path: str | os.PathLike) -> set[str]:
    """Every GLOBAL named by the pickles of a torch.save file (zip: data.pkl; legacy: the leading pickles)."""
    names: set[str] = set()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if any(entry.endswith("/constants.pkl") for entry in archive.namelist()):
                    raise RefusedFileError(f"refused to read {path}: it is a TorchScript archive (code), not "
                                           "weights")
                for entry in archive.namelist():
                    if entry.endswith(".pkl"):
                        names |= _globals_in_pickle(io.BytesIO(archive.read(entry)))
            return names
        with open(path, "rb") as stream:
            for _ in range(_LEGACY_PICKLES):
                names |= _globals_in_pickle(stream)
    except RefusedFileError:
        raise
    except Exception:  # noqa: BLE001 - a damaged file: torch.load reports it; unknown names stay refused
        pass
    return names


def load_torch_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True and the allow-list of the module docstring.

    Raises RefusedFileError naming what was refused; other errors (truncated, corrupt) as torch raises them.
    """
    allowed = {f"{c.__module__}.{c.__qualname__}" for c in ALLOWED_CLASSES}
    names = pickle_globals(path) - allowed
    records: list[Any] = [(_record_class(name), name) for name in sorted(names - {"builtins.getattr"})]
    if "builtins.getattr" in names:
        records.append((_record_attribute, "builtins.getattr"))
    try:
        with _ALLOW_LIST_LOCK, torch.serialization.safe_globals([*ALLOWED_CLASSES, *records]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except RefusedFileError as err:
        raise RefusedFileError(f"refused to read {path}: {err}; nothing from the file was run") from None
    except pickle.UnpicklingError as err:
        raise RefusedFileError(f"refused to read {path}: {_weights_only_reason(str(err))}; nothing from the "
                               "file was run (only tensors, plain containers and attribute records are "
                               "read)") from None


def _weights_only_reason(message: str) -> str:
    """The one line of torch's weights_only error that says what was refused (without its advice to allow it)."""
    unknown = re.search(r"GLOBAL (\S+) was not an allowed global", message)
    if unknown:
        return f"the file names {unknown.group(1)}, which is not on the allow-list"
    blocked = re.search(r"GLOBAL (\S+) whose module (\S+) is blocked", message)
    if blocked:
        return f"the file names {blocked.group(1)} (module {blocked.group(2)} is never allowed)"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for marker in ("WeightsUnpickler error:", "is blocked", "Unsupported", "Trying to", "Can only"):
        for line in lines:
            if marker in line:
                return line.split("WeightsUnpickler error:")[-1].strip()
    return lines[-1] if lines else message


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read with allow_pickle=False; RefusedFileError for an object array."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {}
        for name in data.files:
            try:
                arrays[name] = data[name]
            except ValueError as err:
                if "pickle" in str(err):
                    raise RefusedFileError(f"refused to read {path}: array '{name}' holds Python objects "
                                           "(a pickle); only plain numeric/string arrays are read") from None
                raise
        return arrays
