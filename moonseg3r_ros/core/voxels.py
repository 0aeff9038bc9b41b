"""Voxel keys and the one voxel slot allocator shared by the voxel stores (QueryIndexMemory, InstanceMap).

Keys: a cell's three integer coordinates floor(p / voxel_size), each in [-2^20, 2^20), packed into one int64
(21 bits each, x highest), so a cell is one integer and a batch of cells is one int64 array.

VoxelHash: a vectorised open-addressing (linear probing) table int64 key -> int64 slot; VoxelSlots hands
out dense slots 0, 1, 2, ... to keys in order of first appearance (a batch's new keys ascending) and keeps
the key of every slot. Keys are never deleted; stores keep per-slot data in their own arrays, grown to
`VoxelSlots.capacity`, and mark unused slots themselves. Majority votes per slot are grouped without a
global sort (`dense_groups`, `majority_of_groups`).
"""
from __future__ import annotations

import numpy as np

from . import kernels

_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


def cell_coords(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Nx3 float points -> Nx3 int64 integer cell coordinates floor(p / voxel_size)."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be Nx3, got shape {points.shape}")
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    return np.floor(points * (1.0 / voxel_size)).astype(np.int64)


def pack_keys(cells: np.ndarray) -> np.ndarray:
    """Nx3 int64 cell coordinates (each in [-2^20, 2^20)) -> N int64 keys (sort order: x, then y, then z)."""
    shifted = cells + _OFFSET
    if shifted.size and (shifted.min() < 0 or shifted.max() > _MASK):
        raise ValueError(f"cell coordinates outside +-{_OFFSET} cells; use a larger voxel size or recentre")
    return (shifted[:, 0] << (2 * _BITS)) | (shifted[:, 1] << _BITS) | shifted[:, 2]


def unpack_keys(keys: np.ndarray) -> np.ndarray:
    """N int64 keys -> Nx3 int64 cell coordinates (inverse of `pack_keys`)."""
    keys = np.asarray(keys, np.int64)
    cells = np.stack([(keys >> (2 * _BITS)) & _MASK, (keys >> _BITS) & _MASK, keys & _MASK], axis=1)
    return cells - _OFFSET


def voxel_keys(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Nx3 float points -> N int64 keys of the cells that contain them."""
    return pack_keys(cell_coords(points, voxel_size))


def majority_per_group(group: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Most frequent id per group (ties -> smaller id).

    group: N int (group index of each element, any order); ids: N int.
    Returns (groups G int64 sorted unique, majority id G int64, its count G int64).
    """
    group = np.asarray(group, np.int64)
    ids = np.asarray(ids, np.int64)
    if group.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    order = np.lexsort((ids, group))
    g, i = group[order], ids[order]
    new_pair = np.r_[True, (g[1:] != g[:-1]) | (i[1:] != i[:-1])]
    starts = np.flatnonzero(new_pair)
    counts = np.diff(np.r_[starts, g.size])
    pg, pi = g[starts], i[starts]
    best = np.lexsort((pi, -counts, pg))  # per group: largest count first, then smaller id
    first = np.r_[True, pg[best][1:] != pg[best][:-1]]
    chosen = best[first]
    return pg[chosen], pi[chosen], counts[chosen]


def majority_of_groups(inverse: np.ndarray, ids: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Same result as `majority_per_group` for dense groups 0..G-1, sorting only the groups with mixed ids.

    inverse: N int group of each element; ids: N int (> 0). Returns (vote id G int64, its count G int64);
    groups without elements get id 0 and count 0.
    """
    cand = np.zeros(num_groups, np.int64)
    cand[inverse] = ids
    match = ids == cand[inverse]
    count = np.bincount(inverse[match], minlength=num_groups).astype(np.int64)
    mixed = (count < np.bincount(inverse, minlength=num_groups))[inverse]
    if mixed.any():
        groups, vote, n = majority_per_group(inverse[mixed], ids[mixed])
        cand[groups], count[groups] = vote, n
    return cand, count


def dense_groups(slots: np.ndarray, num_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """N slot indices in [0, num_slots) -> (touched slots U ascending, inverse N in [0, U)) without sorting."""
    touched = np.zeros(num_slots, bool)
    touched[slots] = True
    unique = np.flatnonzero(touched)
    rank = np.empty(num_slots, np.int32)
    rank[unique] = np.arange(unique.size, dtype=np.int32)
    return unique, rank.take(slots)


class VoxelHash:
    """Vectorised open-addressing (linear probing) hash table: int64 key >= 0 -> int64 slot.

    Lookups and inserts take whole arrays; the Python loop runs once per probe step, not per key.
    The table doubles when half full. Keys are never deleted (callers mark slots unused instead).
    """

    _EMPTY = -1
    _MULT = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, capacity: int = 1024):
        self._empty_table(capacity)

    def _empty_table(self, capacity: int) -> None:
        self._bits = max(int(np.ceil(np.log2(max(capacity, 16)))), 4)
        self._table = np.full((1 << self._bits, 2), self._EMPTY, np.int64)  # rows: (key, slot)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        return int(self._table.nbytes)

    def _hash(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.view(np.uint64) * self._MULT) >> np.uint64(64 - self._bits)).astype(np.int64)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """N int64 keys -> N int64 slots (-1 where absent)."""
        keys = np.ascontiguousarray(keys, np.int64)
        if kernels.NUMBA_ENABLED:
            return kernels.hash_lookup(self._table, self._bits, keys)
        mask = (1 << self._bits) - 1
        pos = self._hash(keys)
        rows = self._table.take(pos, axis=0)  # first probe for every key, without the pending indirection
        hit = rows[:, 0] == keys
        out = np.where(hit, rows[:, 1], -1)
        pending = np.flatnonzero(~hit & (rows[:, 0] != self._EMPTY))
        pos = (pos[pending] + 1) & mask
        while pending.size:
            rows = self._table.take(pos, axis=0)  # take: far faster than 2-D fancy indexing
            hit = rows[:, 0] == keys[pending]
            out[pending[hit]] = rows[hit, 1]
            more = ~hit & (rows[:, 0] != self._EMPTY)
            pending, pos = pending[more], (pos[more] + 1) & mask
        return out

    def insert(self, keys: np.ndarray, slots: np.ndarray) -> None:
        """Add unique keys that are not in the table yet, with their slots."""
        keys = np.ascontiguousarray(keys, np.int64)
        slots = np.ascontiguousarray(slots, np.int64)
        if 2 * (self._size + keys.size) > self._table.shape[0]:
            self._rebuild(2 * (self._size + keys.size))
        if kernels.NUMBA_ENABLED:
            kernels.hash_insert(self._table, self._bits, keys, slots)
            self._size += keys.size
            return
        mask = (1 << self._bits) - 1
        pending, pos = np.arange(keys.size), self._hash(keys)
        while pending.size:
            free = np.flatnonzero(self._table.take(pos, axis=0)[:, 0] == self._EMPTY)
            _, first = np.unique(pos[free], return_index=True)
            winners = free[first]
            self._table[pos[winners]] = np.stack([keys[pending[winners]], slots[pending[winners]]], axis=1)
            losers = np.ones(pending.size, bool)
            losers[winners] = False
            pending, pos = pending[losers], (pos[losers] + 1) & mask
        self._size += keys.size

    def _rebuild(self, min_capacity: int) -> None:
        used = self._table[self._table[:, 0] != self._EMPTY]
        self._empty_table(max(min_capacity, 2 * self._table.shape[0]))
        if used.size:
            self.insert(used[:, 0], used[:, 1])


class VoxelSlots:
    """Voxel key -> dense slot (see module docstring): a VoxelHash plus the key of every slot."""

    def __init__(self, capacity: int = 1024):
        self._hash = VoxelHash()
        self._keys = np.zeros(capacity, np.int64)
        self._count = 0

    def __len__(self) -> int:
        """Slots handed out so far."""
        return self._count

    @property
    def capacity(self) -> int:
        """Rows a store's per-slot arrays need (doubles like the key array: max(need, 2 x capacity))."""
        return int(self._keys.shape[0])

    @property
    def keys(self) -> np.ndarray:
        """int64 key of slot 0 .. len-1 (a view)."""
        return self._keys[: self._count]

    @property
    def nbytes(self) -> int:
        return int(self._keys.nbytes + self._hash.nbytes)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """N int64 keys -> N int64 slots (-1 where absent)."""
        return self._hash.lookup(keys)

    def slots_for(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """N int64 keys -> (N int64 slots, new slots K int64), creating slots for keys not seen before.

        The new keys get slots len .. len+K-1 in ascending key order."""
        slots = self._hash.lookup(keys)
        absent = slots < 0
        if not absent.any():
            return slots, np.zeros(0, np.int64)
        new_keys, inverse = np.unique(keys[absent], return_inverse=True)
        new_slots = np.arange(self._count, self._count + new_keys.size)
        self._grow(self._count + new_keys.size)
        self._keys[new_slots] = new_keys
        self._hash.insert(new_keys, new_slots)
        self._count += new_keys.size
        slots[absent] = new_slots[inverse.reshape(-1)]
        return slots, new_slots

    def restore(self, keys: np.ndarray) -> None:
        """Replace the contents by unique keys K (slot k = keys[k]), e.g. when loading a saved store."""
        keys = np.ascontiguousarray(keys, np.int64)
        self._keys = np.zeros(max(keys.size, 1024), np.int64)
        self._keys[: keys.size] = keys
        self._count = int(keys.size)
        self._hash = VoxelHash(2 * keys.size)
        self._hash.insert(keys, np.arange(keys.size))

    def _grow(self, need: int) -> None:
        if need <= self._keys.shape[0]:
            return
        grown = np.zeros(max(need, 2 * self._keys.shape[0]), np.int64)
        grown[: self._count] = self._keys[: self._count]
        self._keys = grown
