"""Placement: tiles → chips (METIS k-way) → cores (locality-aware vector bin packing).

Why METIS edge-cut on a tile graph (docs/partition.md §3): Loihi routes a spike as one message
per (neuron, destination core) output axon, with no multicast assumed on the mesh. A tile graph
whose edge (s, t) carries exactly the messages s sends to t per token therefore measures the
inter-chip messages of a placement *exactly* as the edge cut (hypergraph connectivity would only
be the right metric if one message could fan out inside the destination chip). pymetis is
installed and METIS k-way scales to millions of edges in seconds; KaHyPar would add a build
dependency for a model that does not need hyperedges.

Hierarchy: chips first (METIS, vertex weight = the tile's share of the dominant budget, k =
the number of chips the packed core count needs), then cores within each chip: tiles are already
core-sized by construction, so a locality-aware first-fit-decreasing vector packing puts each
large tile on its own core and each small tile on the core it exchanges the most messages with
that still has room in every budget. Chips that overflow hand their least-connected tiles to
chips with room (or one more chip is opened, up to the profile's count).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ns_compile.partition.tiling import B_GRP, BUDGETS, InfeasibleError, Tiling

GROUP_EPS = 1e-9


@dataclass
class Placement:
    method: str
    chip_of_tile: np.ndarray        # int32 [T]
    core_of_tile: np.ndarray        # int32 [T], global core id = chip * cores_per_chip + local
    n_chips: int
    n_cores: int                    # cores actually used
    seconds: float = 0.0


class CSR:
    """Symmetric tile graph with merged duplicate edges and float weights (bits per token)."""

    def __init__(self, n: int, src: np.ndarray, dst: np.ndarray, w: np.ndarray):
        keep = src != dst
        u = np.concatenate([src[keep], dst[keep]]).astype(np.int64)
        v = np.concatenate([dst[keep], src[keep]]).astype(np.int64)
        ww = np.concatenate([w[keep], w[keep]])
        key = u * n + v
        order = np.argsort(key, kind="stable")
        key, ww = key[order], ww[order]
        uniq = np.ones(key.size, bool)
        uniq[1:] = key[1:] != key[:-1]
        starts = np.nonzero(uniq)[0]
        self.w = np.add.reduceat(ww, starts) if key.size else np.zeros(0)
        key = key[starts]
        del order, ww, uniq, starts
        self.u = (key // n).astype(np.int64)
        self.adjncy = (key % n).astype(np.int64)
        self.xadj = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(self.u, minlength=n), out=self.xadj[1:])
        self.n = n

    def int_weights(self, cap: float = 1e6) -> np.ndarray:
        if self.w.size == 0:
            return np.zeros(0, np.int64)
        m = float(self.w.max())
        return np.maximum(1, np.rint(self.w / m * cap)).astype(np.int64)


def _metis(csr: CSR, nodes: np.ndarray | None, vw: np.ndarray, k: int, seed: int = 1) -> np.ndarray:
    import pymetis

    if nodes is None:
        xadj, adjncy, ew = csr.xadj, csr.adjncy, csr.int_weights()
    else:     # induced subgraph
        local = np.full(csr.n, -1, np.int64)
        local[nodes] = np.arange(nodes.size)
        starts, ends = csr.xadj[nodes], csr.xadj[nodes + 1]
        counts = ends - starts
        idx = np.repeat(starts - np.cumsum(np.concatenate([[0], counts[:-1]])), counts) + np.arange(counts.sum())
        nb = local[csr.adjncy[idx]]
        ok = nb >= 0
        owner = np.repeat(np.arange(nodes.size), counts)[ok]
        adjncy = nb[ok]
        ew = csr.int_weights()[idx][ok]
        xadj = np.zeros(nodes.size + 1, np.int64)
        np.cumsum(np.bincount(owner, minlength=nodes.size), out=xadj[1:])
    n = xadj.size - 1
    if k <= 1 or n <= k:
        return np.arange(n) % max(k, 1) if n <= k else np.zeros(n, np.int64)
    opts = pymetis.Options(seed=seed, ufactor=5, ncuts=1)
    if hasattr(pymetis, "CSRAdjacency"):
        _, parts = pymetis.part_graph(k, pymetis.CSRAdjacency(xadj, adjncy), vweights=vw.astype(np.int64),
                                      eweights=ew, options=opts)
    else:
        _, parts = pymetis.part_graph(k, xadj=xadj, adjncy=adjncy, vweights=vw.astype(np.int64),
                                      eweights=ew, options=opts)
    return np.asarray(parts, np.int64)


class _Packer:
    """Vector bin packing of tiles into the cores of one chip."""

    def __init__(self, frac: np.ndarray, cores: int):
        self.frac = frac
        self.load = np.zeros((cores, frac.shape[1]))
        self.used = 0
        self.cores = cores

    def fits(self, c: int, t: int) -> bool:
        return bool(np.all(self.load[c] + self.frac[t] <= 1.0 + GROUP_EPS))

    def put(self, c: int, t: int):
        self.load[c] += self.frac[t]

    def open(self) -> int:
        if self.used >= self.cores:
            return -1
        self.used += 1
        return self.used - 1


def pack_chip(tiles: np.ndarray, frac: np.ndarray, csr: CSR | None, cores: int, core_of_tile: np.ndarray,
              dom: int) -> np.ndarray:
    """Pack `tiles` into at most `cores` cores; returns the tiles that did not fit (overflow).
    Writes local core ids into core_of_tile[tiles]. Order: tiles bound by the dominant budget
    first (largest first: each opens a core), then the others, each onto the open core it
    exchanges the most messages with that has room in every budget, else any core with room,
    else a new core."""
    f = frac[tiles]
    bound_dom = f.argmax(axis=1) == dom
    order = np.lexsort((-f.max(axis=1), ~bound_dom))
    pk = _Packer(frac, cores)
    overflow = []
    for j in order:
        t = int(tiles[j])
        best = -1
        if pk.used:
            room = np.nonzero(np.all(pk.load[:pk.used] + frac[t] <= 1.0 + GROUP_EPS, axis=1))[0]
            if room.size and csr is not None:
                nb = csr.adjncy[csr.xadj[t]:csr.xadj[t + 1]]
                w = csr.w[csr.xadj[t]:csr.xadj[t + 1]]
                placed = core_of_tile[nb]
                m = placed >= 0
                if m.any():
                    score = np.bincount(placed[m], weights=w[m], minlength=pk.used)[room]
                    if score.max() > 0:
                        best = int(room[np.argmax(score)])
            if best < 0 and room.size:
                best = int(room[0])
        if best < 0:
            best = pk.open()
            if best < 0:
                overflow.append(t)
                continue
        pk.put(best, t)
        core_of_tile[t] = best
    return np.asarray(overflow, np.int64)


def _next_fit(tiles: np.ndarray, frac: np.ndarray, cores: int, core_of_tile: np.ndarray) -> bool:
    """Tiles in graph order, next-fit (the naive rule inside one chip); False if over `cores`."""
    cur, load = 0, np.zeros(frac.shape[1])
    for t in np.sort(tiles):
        if np.any(load + frac[t] > 1.0 + GROUP_EPS):
            cur += 1
            load[:] = 0
        load += frac[t]
        core_of_tile[t] = cur
    return cur < cores


def _cut_within(tiles: np.ndarray, core_of_tile: np.ndarray, csr: CSR | None) -> float:
    if csr is None or tiles.size == 0:
        return 0.0
    starts, ends = csr.xadj[tiles], csr.xadj[tiles + 1]
    counts = ends - starts
    idx = np.repeat(starts - np.cumsum(np.concatenate([[0], counts[:-1]])), counts) + np.arange(counts.sum())
    src = np.repeat(tiles, counts)
    dst = csr.adjncy[idx]
    inside = np.zeros(csr.n, bool)
    inside[tiles] = True
    m = inside[dst] & (core_of_tile[src] != core_of_tile[dst])
    return float(csr.w[idx][m].sum())


def _pack_best(tiles, frac, csr, cores, core_of_tile, dom) -> np.ndarray:
    """Locality-aware FFD packing, or the in-order next-fit when that fits and cuts less."""
    over = pack_chip(tiles, frac, csr, cores, core_of_tile, dom)
    if over.size or tiles.size == 0:
        return over
    alt = core_of_tile.copy()
    if not _next_fit(tiles, frac, cores, alt):
        return over
    if _cut_within(tiles, alt, csr) < _cut_within(tiles, core_of_tile, csr):
        core_of_tile[tiles] = alt[tiles]
    return over


def _dominant(tiling: Tiling) -> tuple[int, np.ndarray]:
    frac = tiling.demand / tiling.capacity
    dom = int(np.argmax(frac.sum(axis=0)[:B_GRP]))
    return dom, frac


def lower_bound_cores(tiling: Tiling) -> tuple[int, str, np.ndarray]:
    tot = tiling.demand.sum(axis=0) / tiling.capacity
    per = np.ceil(tot - 1e-9).astype(np.int64)
    b = int(np.argmax(per))
    return int(per[b]), BUDGETS[b], per


def place_metis(tiling: Tiling, profile, csr: CSR, seed: int = 1) -> Placement:
    import time

    t0 = time.perf_counter()
    dom, frac = _dominant(tiling)
    T = tiling.n_tiles
    cpc = profile.cores_per_chip
    lb, _, _ = lower_bound_cores(tiling)
    # a tile filling over half of a core in the dominant budget needs a core of its own; the
    # others mostly fit beside those (packing-aware tiling); start there, add chips on overflow
    est_cores = int(np.count_nonzero(frac[:, dom] > 0.5))
    k = min(max(1, -(-max(est_cores, lb) // cpc)), profile.chips)
    vw = np.rint(frac[:, dom] * 1000).astype(np.int64) + 1
    while True:
        if k > profile.chips:
            raise _too_big(tiling, profile, k, placed=True)
        parts = _metis(csr, None, vw, k, seed) if k > 1 else np.zeros(T, np.int64)
        chip = parts.astype(np.int32)
        local = np.full(T, -1, np.int64)
        spill = []
        members = _group(chip, k)
        for c in range(k):
            spill.append(_pack_best(members[c], frac, csr, cpc, local, dom))
        spill = np.concatenate(spill) if spill else np.zeros(0, np.int64)
        ok = True
        if spill.size:
            ok = _repair(spill, chip, local, frac, csr, k, cpc)
        if ok:
            break
        k += 1
    core = (chip.astype(np.int64) * cpc + local).astype(np.int32)
    used = np.unique(core).size
    return Placement("metis", chip, core, int(np.unique(chip).size), int(used), time.perf_counter() - t0)


def _group(labels: np.ndarray, k: int) -> list[np.ndarray]:
    order = np.argsort(labels, kind="stable")
    cuts = np.searchsorted(labels[order], np.arange(k + 1))
    return [order[cuts[i]:cuts[i + 1]] for i in range(k)]


def _repair(spill, chip, local, frac, csr, k, cpc) -> bool:
    """Move tiles that overflowed their chip to the chip they talk to most that has room."""
    loads = {}
    for c in range(k):
        m = np.nonzero((chip == c) & (local >= 0))[0]
        ld = np.zeros((cpc, frac.shape[1]))
        np.add.at(ld, local[m], frac[m])
        loads[c] = ld
    for t in spill:
        t = int(t)
        nb = csr.adjncy[csr.xadj[t]:csr.xadj[t + 1]]
        w = csr.w[csr.xadj[t]:csr.xadj[t + 1]]
        m = local[nb] >= 0
        score = np.bincount(chip[nb[m]], weights=w[m], minlength=k) if m.any() else np.zeros(k)
        placed = False
        for c in np.argsort(-score, kind="stable"):
            ld = loads[int(c)]
            room = np.nonzero(np.all(ld + frac[t] <= 1.0 + GROUP_EPS, axis=1))[0]
            if room.size:
                # prefer a non-empty core only for small tiles; an empty core otherwise
                empty = room[ld[room].max(axis=1) == 0]
                j = int(empty[0]) if (frac[t].max() >= 0.5 and empty.size) else int(room[0])
                ld[j] += frac[t]
                chip[t] = int(c)
                local[t] = j
                placed = True
                break
        if not placed:
            return False
    return True


def place_naive(tiling: Tiling, profile) -> Placement:
    """Sequential fill: tiles in graph order, next-fit onto the current core, next chip after
    cores_per_chip cores."""
    import time

    t0 = time.perf_counter()
    _, frac = _dominant(tiling)
    T = tiling.n_tiles
    core = np.empty(T, np.int64)
    cur = 0
    load = np.zeros(frac.shape[1])
    for t in range(T):
        if np.any(load + frac[t] > 1.0 + GROUP_EPS):
            cur += 1
            load[:] = 0
        load += frac[t]
        core[t] = cur
    cpc = profile.cores_per_chip
    chip = (core // cpc).astype(np.int32)
    n_chips = int(chip.max()) + 1 if T else 0
    if n_chips > profile.chips:
        raise _too_big(tiling, profile, n_chips, naive=True, placed=True)
    return Placement("naive", chip, core.astype(np.int32), n_chips, int(cur + 1), time.perf_counter() - t0)


def _too_big(tiling: Tiling, profile, chips_needed: int, naive: bool = False, placed: bool = False) -> InfeasibleError:
    lb, b, per = lower_bound_cores(tiling)
    have = profile.total_cores
    tot = tiling.demand.sum(axis=0)
    cap = tiling.capacity
    bi = BUDGETS.index(b)
    bits = sorted(set(tiling.weight_bits.values()))
    head = (f"hardware profile {profile.name!r} has {profile.chips} chip(s) x {profile.cores_per_chip} cores = "
            f"{have} cores")
    if not placed:
        return InfeasibleError(
            f"{head}, but the model needs at least {lb} cores = {-(-lb // profile.cores_per_chip)} chips "
            f"(binding budget {b}: {int(tot[bi])} in all vs {int(cap[bi])} per core, weight bits {bits}): "
            f"exceeds by {lb - have} cores ({lb / have:.2f}x)")
    return InfeasibleError(
        f"{head}; the lower bound ({lb} cores, binding budget {b}) fits, but the "
        f"{'sequential fill' if naive else 'placement'} needs {chips_needed} chips: exceeds by "
        f"{chips_needed - profile.chips} chip(s)")
