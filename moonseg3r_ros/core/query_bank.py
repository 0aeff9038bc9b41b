"""Query bank Q_t (block (c) of the paper's Figure 2): what the map remembers about every instance query.

Per instance id: query vector (D), optional state token (S), 3D box (2x3: min, max), observation count.
Update rule (`upsert`): an observation with weight w = 1 / min(count + 1, window) is blended in,
q <- (1 - w) q + w q_new (a running mean over the first `window` observations, then an exponential average
with weight 1/window); the same rule applies to the state token; boxes are the union of the stored box and
the observed one. Vectors are not normalised (the association uses cosines).
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np


class QueryBank:
    """Per-id query (D), state token (S or absent), box (2x3) and observation count (see module docstring)."""

    def __init__(self, dim: int, token_dim: Optional[int] = None, window: int = 20):
        if dim <= 0 or window <= 0:
            raise ValueError(f"dim and window must be > 0, got {dim}, {window}")
        self.dim = int(dim)
        self.token_dim = token_dim
        self.window = int(window)
        self.reset()

    def reset(self) -> None:
        self._row: dict[int, int] = {}
        self._ids = np.zeros(0, np.int64)
        self._queries = np.zeros((0, self.dim), np.float32)
        self._tokens = np.zeros((0, self.token_dim or 0), np.float32)
        self._has_token = np.zeros(0, bool)
        self._boxes = np.zeros((0, 2, 3), np.float32)
        self._counts = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, instance_id: int) -> bool:
        return int(instance_id) in self._row

    def ids(self) -> np.ndarray:
        """All stored ids, ascending."""
        return np.sort(np.fromiter(self._row.keys(), np.int64, len(self._row)))

    def _rows(self, ids: Iterable[int]) -> np.ndarray:
        try:
            return np.array([self._row[int(i)] for i in ids], np.int64)
        except KeyError as err:
            raise KeyError(f"query bank has no id {err.args[0]}") from None

    def get(self, ids: Iterable[int]) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray]:
        """(queries VxD float32, tokens VxS float32 or None when any id lacks one, boxes Vx2x3, counts V)."""
        rows = self._rows(ids)
        tokens = self._tokens[rows] if rows.size and self._has_token[rows].all() else None
        if rows.size == 0 and self.token_dim:
            tokens = np.zeros((0, self.token_dim), np.float32)
        return self._queries[rows].copy(), tokens, self._boxes[rows].copy(), self._counts[rows].copy()

    def upsert(self, ids: Iterable[int], queries: np.ndarray, boxes: np.ndarray,
               tokens: Optional[np.ndarray] = None) -> None:
        """Insert new ids or blend observations into existing ones. queries NxD, boxes Nx2x3, tokens NxS."""
        ids = [int(i) for i in ids]
        if len(set(ids)) != len(ids):
            raise ValueError("upsert: ids must be unique within one call")
        queries = np.asarray(queries, np.float32).reshape(len(ids), self.dim)
        boxes = np.asarray(boxes, np.float32).reshape(len(ids), 2, 3)
        if tokens is not None:
            tokens = np.asarray(tokens, np.float32)
            self._ensure_token_dim(tokens.shape[1])
        self._append_missing(ids)
        rows = self._rows(ids)
        weight = (1.0 / np.minimum(self._counts[rows] + 1, self.window)).astype(np.float32)[:, None]
        self._queries[rows] = (1 - weight) * self._queries[rows] + weight * queries
        if tokens is not None:
            had = self._has_token[rows][:, None]
            blended = (1 - weight) * self._tokens[rows] + weight * tokens
            self._tokens[rows] = np.where(had, blended, tokens)
            self._has_token[rows] = True
        fresh = (self._counts[rows] == 0)[:, None, None]
        union = np.stack([np.minimum(self._boxes[rows, 0], boxes[:, 0]),
                          np.maximum(self._boxes[rows, 1], boxes[:, 1])], axis=1)
        self._boxes[rows] = np.where(fresh, boxes, union)
        self._counts[rows] += 1

    def _ensure_token_dim(self, token_dim: int) -> None:
        if self.token_dim is None or (self.token_dim == 0 and not self._has_token.any()):
            self.token_dim = int(token_dim)
            self._tokens = np.zeros((self._ids.size, token_dim), np.float32)
        elif token_dim != self.token_dim:
            raise ValueError(f"state tokens have {token_dim} entries, the bank holds {self.token_dim}")

    def _append_missing(self, ids: list[int]) -> None:
        missing = [i for i in ids if i not in self._row]
        if not missing:
            return
        n, m = self._ids.size, len(missing)
        self._row.update({i: n + k for k, i in enumerate(missing)})
        self._ids = np.r_[self._ids, np.asarray(missing, np.int64)]
        self._queries = np.concatenate([self._queries, np.zeros((m, self.dim), np.float32)])
        self._tokens = np.concatenate([self._tokens, np.zeros((m, self._tokens.shape[1]), np.float32)])
        self._has_token = np.r_[self._has_token, np.zeros(m, bool)]
        self._boxes = np.concatenate([self._boxes, np.zeros((m, 2, 3), np.float32)])
        self._counts = np.r_[self._counts, np.zeros(m, np.int64)]

    def remove(self, ids: Iterable[int]) -> None:
        """Forget ids (unknown ids are ignored)."""
        drop = {int(i) for i in ids} & set(self._row)
        if not drop:
            return
        keep = np.array([int(i) not in drop for i in self._ids], bool)
        self._ids, self._queries = self._ids[keep], self._queries[keep]
        self._tokens, self._has_token = self._tokens[keep], self._has_token[keep]
        self._boxes, self._counts = self._boxes[keep], self._counts[keep]
        self._row = {int(i): k for k, i in enumerate(self._ids)}
