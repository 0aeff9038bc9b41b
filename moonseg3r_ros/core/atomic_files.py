"""Writing a file so that readers see the old one or the new one, never a half-written one.

`replaced_atomically(target)` gives a temporary path beside `target` whose name is unique to this writer (two
writers of one target, e.g. two trainings sharing a cache folder or a shutdown save beside a service call, never
share it); when the block succeeds the file is renamed onto `target` (os.replace: atomic on one file system),
when it fails it is removed and `target` stays as it was. The temporary file is created by the block's own
writer, so it gets the usual permissions (umask), unlike tempfile.mkstemp's 0600. A process killed mid-write
leaves its `NAME.<unique>.partial` file (visible, not hidden, so it can be seen and removed); `target` is intact.
The file is fsync'ed before the rename and its folder after it, so a power cut (robots lose power) leaves the old
or the new file, not an empty one.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def replaced_atomically(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield `NAME.<unique>.partial<suffix>` beside `target`; rename it onto `target` when the block succeeds.

    `suffix` keeps an extension for writers that would otherwise append one (np.savez adds `.npz`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.partial{suffix}")
    try:
        yield partial
        _fsync_file(partial)
        os.replace(partial, target)
        _fsync_folder(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(path: Path) -> None:
    """Best effort: not every file system lets a folder be opened or fsync'ed."""
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
