"""Compiled single-pass kernels for the map's hottest loops (numba), with the numpy code as the fallback.

Chosen at import (`DISABLED_REASON` says why when off): `NUMBA_ENABLED` is True when numba imports and the
environment variable `MOONSEG3R_NO_NUMBA` is not "1"; callers (voxels.VoxelHash, query_memory.QueryIndexMemory.update,
instance_map.InstanceMap.integrate) read it at call time and otherwise run their numpy code. Every kernel
gives bit-identical results to that numpy code: the same float32 / float64 operations in the same order
(sums accumulate in point order from 0.0 like np.bincount; products of float32 stay float32), the same
tie rules (majority id: most points, ties -> smaller id), the same slot numbering (ascending keys for new
slots; touched voxels visited in ascending slot order).

    hash_lookup(table, bits, keys)                   VoxelHash.lookup: linear probing, one pass per key
    hash_insert(table, bits, keys, slots)            VoxelHash.insert of unique absent keys
    fuse_and_vote(slots, num_slots, points, colors, conf, ids, attrs, votes, max_weight)
                                                     InstanceMap.integrate after the slots are known:
                                                     running means, weights and the Boyer-Moore vote
    claim_cells(slots, num_slots, ids, cell_ids)     QueryIndexMemory.update: in-batch majority per cell

The first call of each kernel compiles it (`cache=True`: later processes load the machine code from
__pycache__); `warm()` calls every kernel on tiny inputs so a pipeline's first keyframe is not slow.
"""
from __future__ import annotations

import os

import numpy as np

try:
    if os.environ.get("MOONSEG3R_NO_NUMBA", "") == "1":
        raise ImportError("disabled by MOONSEG3R_NO_NUMBA=1")
    from numba import njit
    NUMBA_ENABLED, DISABLED_REASON = True, ""
except ImportError as _err:  # numpy fallback (the callers' own code)
    NUMBA_ENABLED, DISABLED_REASON = False, f"numba kernels off ({_err}): the numpy code runs"

    def njit(*args, **kwargs):  # type: ignore[no-redef]  # keeps the definitions below importable (never called)
        return lambda function: function

_EMPTY = -1


@njit(cache=True, nogil=True)
def _hash_position(key, bits):
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits))


@njit(cache=True, nogil=True)
def hash_lookup(table, bits, keys):
    """table Tx2 int64 (key, slot; -1 = empty), N int64 keys -> N int64 slots (-1 where absent)."""
    mask = (np.int64(1) << bits) - 1
    out = np.empty(keys.size, np.int64)
    for i in range(keys.size):
        key = keys[i]
        pos = _hash_position(key, bits)
        slot = -1
        while True:
            stored = table[pos, 0]
            if stored == key:
                slot = table[pos, 1]
                break
            if stored == -1:
                break
            pos = (pos + 1) & mask
        out[i] = slot
    return out


@njit(cache=True, nogil=True)
def hash_insert(table, bits, keys, slots):
    """Put unique keys absent from the table (with their slots) at their first free probe position."""
    mask = (np.int64(1) << bits) - 1
    for i in range(keys.size):
        pos = _hash_position(keys[i], bits)
        while table[pos, 0] != -1:
            pos = (pos + 1) & mask
        table[pos, 0] = keys[i]
        table[pos, 1] = slots[i]


@njit(cache=True, nogil=True)
def _dense_groups(slots, num_slots):
    """N slots -> (touched U ascending, inverse N int32 in [0, U)); a byte mark per slot, one scan."""
    mark = np.zeros(num_slots, np.uint8)
    for i in range(slots.size):
        mark[slots[i]] = 1
    rank = np.empty(num_slots, np.int32)
    touched = np.empty(slots.size, np.int64)
    count = 0
    for s in range(num_slots):
        if mark[s]:
            rank[s] = count
            touched[count] = s
            count += 1
    inverse = np.empty(slots.size, np.int32)
    for i in range(slots.size):
        inverse[i] = rank[slots[i]]
    return touched[:count], inverse


@njit(cache=True, nogil=True)
def _majority(inverse, ids, num_groups):
    """Most frequent id != 0 per group (ties -> smaller id) and its count; groups without one: 0, 0."""
    cand = np.zeros(num_groups, np.int64)
    agree = np.zeros(num_groups, np.int64)
    total = np.zeros(num_groups, np.int64)
    for i in range(inverse.size):
        label = ids[i]
        if label == 0:
            continue
        g = inverse[i]
        if total[g] == 0:
            cand[g] = label
        total[g] += 1
        if cand[g] == label:
            agree[g] += 1
    mixed_points = 0
    for i in range(inverse.size):
        if ids[i] != 0 and agree[inverse[i]] < total[inverse[i]]:
            mixed_points += 1
    if mixed_points == 0:
        return cand, agree
    group = np.empty(mixed_points, np.int64)
    label = np.empty(mixed_points, np.int64)
    k = 0
    for i in range(inverse.size):
        if ids[i] != 0 and agree[inverse[i]] < total[inverse[i]]:
            group[k] = inverse[i]
            label[k] = ids[i]
            k += 1
    order = np.argsort(label, kind="mergesort")
    order = order[np.argsort(group[order], kind="mergesort")]  # by group, then id (stable: lexsort)
    start = 0
    while start < mixed_points:
        g = group[order[start]]
        best_id, best_n = 0, 0
        run = start
        while run < mixed_points and group[order[run]] == g:
            this_id = label[order[run]]
            end = run
            while end < mixed_points and group[order[end]] == g and label[order[end]] == this_id:
                end += 1
            if end - run > best_n:  # ascending ids: a tie keeps the smaller id
                best_id, best_n = this_id, end - run
            run = end
        cand[g], agree[g] = best_id, best_n
        start = run
    return cand, agree


@njit(cache=True, nogil=True)
def fuse_and_vote(slots, num_slots, points, colors, conf, ids, attrs, votes, max_weight):
    """Fuse N points into the touched voxels of the Sx8 float32 records (xyz rgb conf weight) and vote.

    slots N int64 in [0, num_slots); points Nx3 float32; colors Nx3 uint8 or float32; conf N float32; ids N
    int64 (0 = unassigned); attrs Sx8 float32 and votes Sx2 int32 (vote id, count) updated in place;
    max_weight: MapConfig.max_point_weight. Same arithmetic as InstanceMap._fuse_means / _vote."""
    touched, inverse = _dense_groups(slots, num_slots)
    size = touched.size
    count = np.zeros(size, np.int64)
    sums = np.zeros((size, 7), np.float64)
    for i in range(slots.size):
        g = inverse[i]
        count[g] += 1
        for c in range(3):
            sums[g, c] += np.float64(points[i, c])
            sums[g, 3 + c] += np.float64(colors[i, c])
        sums[g, 6] += np.float64(conf[i])
    cap = np.float32(max_weight)
    for g in range(size):
        s = touched[g]
        old_w = attrs[s, 7]
        total = old_w + np.float32(count[g])
        for c in range(7):
            prior = attrs[s, c] * old_w  # float32 product, as numpy's in-place float32 multiply
            attrs[s, c] = np.float32((sums[g, c] + np.float64(prior)) / np.float64(total))
        attrs[s, 7] = total if total <= cap else cap
    vote_id, vote_n = _majority(inverse, ids, size)
    cap_n = np.int64(max_weight)
    for g in range(size):
        n = vote_n[g]
        if n <= 0:
            continue
        s = touched[g]
        current = np.int64(votes[s, 0])
        c = np.int64(votes[s, 1])
        c = c + n if current == vote_id[g] else c - n
        if c < 0:
            current, c = vote_id[g], -c
        votes[s, 0] = current
        votes[s, 1] = c if c <= cap_n else cap_n


@njit(cache=True, nogil=True)
def claim_cells(slots, num_slots, ids, cell_ids):
    """cell_ids[touched slot] = majority id of its points (ids N int64, all != 0); QueryIndexMemory.update."""
    touched, inverse = _dense_groups(slots, num_slots)
    vote_id, _ = _majority(inverse, ids, touched.size)
    for g in range(touched.size):
        cell_ids[touched[g]] = vote_id[g]


@njit(cache=True, nogil=True)
def visible_cells(cam, intrinsics, near, height, width, cell_ids, depth, depth_valid, tolerance, use_depth,
                  use_valid):
    """Cells whose camera-frame centre (cam Cx3 float64) projects inside the HxW image in front of the camera,
    claimed (cell_ids != 0) and, with use_depth, not occluded by depth (HxW float; tolerance of its dtype;
    with use_valid, pixels where depth_valid is False occlude nothing) -> (index V, row V, col V, z V).

    Same operations in the same order as project_points + QueryIndexMemory.retrieve's numpy code."""
    k00, k01, k02 = intrinsics[0, 0], intrinsics[0, 1], intrinsics[0, 2]
    k11, k12 = intrinsics[1, 1], intrinsics[1, 2]
    size = cam.shape[0]
    index = np.empty(size, np.int64)
    rows = np.empty(size, np.int64)
    cols = np.empty(size, np.int64)
    depths = np.empty(size, np.float64)
    count = 0
    for i in range(size):
        if cell_ids[i] == 0:
            continue
        z = cam[i, 2]
        safe = z if z > 0 else 1.0
        u = cam[i, 0] * k00
        u /= safe
        if k01 != 0:
            u += k01 * cam[i, 1] / safe
        u += k02
        u += 0.5
        v = cam[i, 1] * k11
        v /= safe
        v += k12
        v += 0.5
        if not (z > near and u >= 0 and u < width and v >= 0 and v < height):
            continue
        col, row = np.int64(np.floor(u)), np.int64(np.floor(v))
        if use_depth:
            observed = depth[row, col]
            bad = not np.isfinite(observed) or observed <= 0
            if use_valid and not depth_valid[row, col]:
                bad = True
            if not bad and not (z <= observed + tolerance):
                continue
        index[count], rows[count], cols[count], depths[count] = i, row, col, z
        count += 1
    return index[:count], rows[:count], cols[:count], depths[:count]


def warm() -> None:
    """Compile (or load from the cache) every kernel on tiny inputs; a no-op without numba."""
    if not NUMBA_ENABLED:
        return
    table = np.full((16, 2), _EMPTY, np.int64)
    keys = np.array([3, 7], np.int64)
    slots = np.array([0, 1], np.int64)
    hash_insert(table, 4, keys, slots)
    hash_lookup(table, 4, keys)
    points = np.zeros((3, 3), np.float32)
    ids = np.array([1, 2, 1], np.int64)
    three = np.array([0, 0, 1], np.int64)
    fuse_and_vote(three, 2, points, np.zeros((3, 3), np.uint8), np.ones(3, np.float32), ids,
                  np.zeros((2, 8), np.float32), np.zeros((2, 2), np.int32), 100)
    claim_cells(three, 2, ids, np.zeros(2, np.int32))
    cam = np.ones((2, 3))
    for depth in (np.ones((2, 3, 3), np.float32)[..., 2], np.ones((2, 2), np.float64)):  # a pointmap's z; a depth image
        visible_cells(cam, np.eye(3), 1e-3, 2, 2, np.ones(2, np.int32), depth, np.ones((2, 2), bool),
                      depth.dtype.type(0.1), True, True)
