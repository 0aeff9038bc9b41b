"""Point the ROS 2 PyPI wheels' CMake exports at this interpreter's real include directories.

The kilted `ros-*` wheels are built in a manylinux container and their `*Export.cmake` files name
`/opt/python/cp311-cp311/include/python3.11` (Python headers) and
`/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include` (numpy headers). CMake refuses
imported targets whose include directories do not exist, so building any interface package that depends
on e.g. builtin_interfaces fails. This script rewrites those paths in the venv's cmake files to the real
ones. It is idempotent: a second run finds nothing to change.

Usage: python scripts/patch_ros_wheels.py [PREFIX]   (PREFIX defaults to sys.prefix, i.e. the venv)
"""
from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

WHEEL_PREFIX = "/opt/python/cp311-cp311"
_NUMPY_RE = re.compile(re.escape(WHEEL_PREFIX) + r"/lib/python3\.\d+/site-packages/numpy/(?:_core|core)/include")
_PYINC_RE = re.compile(re.escape(WHEEL_PREFIX) + r"/include/python3\.\d+")


def real_includes() -> tuple[str, str]:
    import numpy

    return sysconfig.get_paths()["include"], numpy.get_include()


def patch_text(text: str, python_include: str, numpy_include: str) -> str:
    text = _NUMPY_RE.sub(numpy_include, text)
    return _PYINC_RE.sub(python_include, text)


def patch_prefix(prefix: Path) -> list[Path]:
    python_include, numpy_include = real_includes()
    changed = []
    for sub in ("share", "lib"):
        root = prefix / sub
        if not root.is_dir():
            continue
        for path in root.rglob("*.cmake"):
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            if WHEEL_PREFIX not in text:
                continue
            new = patch_text(text, python_include, numpy_include)
            if new != text:
                path.write_text(new)
                changed.append(path)
    return changed


def main(argv: list[str]) -> int:
    prefix = Path(argv[1]) if len(argv) > 1 else Path(sys.prefix)
    changed = patch_prefix(prefix)
    python_include, numpy_include = real_includes()
    print(f"patch_ros_wheels: {len(changed)} cmake file(s) patched under {prefix} "
          f"(python include {python_include}, numpy include {numpy_include})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
