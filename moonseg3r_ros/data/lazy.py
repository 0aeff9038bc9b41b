"""`LazyFrames`: the index handling shared by the lazily loaded frame sequences."""

from __future__ import annotations

from abc import abstractmethod
from typing import Iterator, Sequence

from moonseg3r_ros.core.types import Frame


class LazyFrames(Sequence[Frame]):
    """A read-only sequence of `Frame`s built on access; subclasses give `__len__` and `_frame(index)`."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _frame(self, index: int) -> Frame:
        """The frame at `index`, already checked to lie in 0..len-1."""

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range (0..{len(self) - 1})")
        return self._frame(index)

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]
