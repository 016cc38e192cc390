"""The device program of a `QGraph`: op table, planned arena and weight blob for `har_graph.c`.

Steps of `build(graph)`:
1. Tensors: one per node; a flatten aliases its input (channel-last storage makes it free), so it has no
   buffer and no op. Lifetime of a tensor = [the op that writes it (0 for the input, which the caller
   writes before op 0), the last op that reads it (through aliases)]; the output lives to the last op. A
   residual's input is read by the add, so it stays alive across the whole branch: the planner sees it.
2. Plan the arena with `system_opts.planner` (greedy with restarts, 4-byte alignment), beside the naive
   one-buffer-per-tensor sum (`MemoryPlan.naive_bytes`).
3. Weight blob: per conv / linear its int32 bias, multipliers and shifts first, then every weight, each
   array 4-byte aligned; the bytes are deterministic (CRC-checked on the device). A weight is stored
   dense int8 (OHWI / (C_out, F)) or, when it has at most 16 distinct values (clustering) and `storage`
   asks for it, as a 16-entry int8 palette + 4-bit indices (two per byte, each output channel's row on a
   byte boundary): the kernel decodes one row at a time into a scratch row planned in the arena, live for
   that op only (`layer_storage`; "auto": palette4 wherever it is smaller).
4. One `HAR_G_OP_WORDS` int32 row per op, slots as documented at each kernel in har_graph.c.
5. The kernels' contract (har_graph.c header) is checked here; a graph outside it is refused with one line.
Limits: little-endian blob (every Cortex-M and x86/aarch64 Linux target here).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from har.errors import BadDataError, BadOptionError
from model_opts.graph.quantize import QGraph
from system_opts.planner import MemoryPlan, plan_buffers

OP_WORDS = 32
KIND = {"conv": 1, "linear": 2, "maxpool": 3, "avgpool": 4, "mean": 5, "add": 6, "relu": 7}
ALIGNMENT_BYTES = 4


@dataclass(frozen=True)
class Buffer:
    name: str
    size_bytes: int
    first_use: int
    last_use: int


@dataclass(frozen=True)
class GraphProgram:
    ops: np.ndarray  # (n_ops, OP_WORDS) int32
    op_names: tuple[str, ...]
    blob: bytes
    plan: MemoryPlan
    buffers: tuple[Buffer, ...]
    input_offset: int
    input_bytes: int
    output_offset: int
    output_bytes: int
    input_scale: float
    input_zero_point: int

    @property
    def arena_bytes(self) -> int:
        return self.plan.arena_bytes

    def summary(self) -> dict:
        return {"ops": len(self.op_names), "weight_blob_bytes": len(self.blob), "arena_bytes": self.plan.arena_bytes,
                "naive_arena_bytes": self.plan.naive_bytes, "lower_bound_arena_bytes": self.plan.lower_bound_bytes,
                "palette4_layers": int((self.ops[:, 27] == PALETTE4).sum())}


def _size(shape) -> int:
    return int(np.prod(shape))


def _check(graph: QGraph) -> None:
    for n in graph.nodes:
        a = n.attrs
        if not -128 <= n.zero_point <= 127:
            raise BadDataError(f"{n.name}: zero point {n.zero_point} outside int8")
        if "act_min" in a and not -128 <= a["act_min"] <= a["act_max"] <= 127:
            raise BadDataError(f"{n.name}: clamp bounds [{a['act_min']}, {a['act_max']}] not within int8")
        if n.weight is not None:
            terms = int(np.prod(n.weight.shape[1:]))
            bound = int(np.abs(n.bias.astype(np.int64)).max(initial=0)) + terms * 255 * 128
            if bound >= 1 << 31:
                raise BadDataError(f"{n.name}: |bias| + {terms} terms x 255 x 128 = {bound} could overflow int32")
            if (n.multiplier < 0).any() or (n.shift < -31).any() or (n.shift > 30).any():
                raise BadDataError(f"{n.name}: requantization outside multiplier >= 0, shift in [-31, 30]")
        if n.kind == "add" and max(a["e1"], a["e2"], a["eo"]) > 0:
            raise BadDataError(f"{n.name}: add shifts must be <= 0")
        if n.kind == "mean" and not (a["multiplier"] >= 0 and -31 <= a["shift"] <= 30):
            raise BadDataError(f"{n.name}: mean requantization outside the contract")


STORAGES = ("dense", "palette4", "auto")
DENSE, PALETTE4 = 0, 1  # har_graph.h HAR_G_DENSE / HAR_G_PALETTE4


def palette4(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(16-entry int8 palette, packed 4-bit indices: per output channel row, two per byte, low nibble first)
    of a weight with at most 16 distinct values, else None."""
    values = np.unique(weight)
    if len(values) > 16:
        return None
    pal = np.zeros(16, np.int8)
    pal[:len(values)] = values
    idx = np.searchsorted(values, weight.reshape(len(weight), -1)).astype(np.uint8)
    if idx.shape[1] % 2:
        idx = np.concatenate([idx, np.zeros((len(idx), 1), np.uint8)], axis=1)
    return pal, (idx[:, 0::2] | (idx[:, 1::2] << 4)).astype(np.uint8)


def layer_storage(weight: np.ndarray, storage: str) -> int:
    """The storage of one conv / linear weight: palette4 when asked (or, for "auto", when it is smaller)
    and the layer has at most 16 distinct values, else dense."""
    if storage == "dense":
        return DENSE
    packed = palette4(weight)
    if packed is None:
        return DENSE
    return PALETTE4 if storage == "palette4" or packed[1].size + 16 < weight.size else DENSE


def _blob(graph: QGraph, formats: dict[int, int]) -> tuple[bytes, dict[tuple[int, str], int]]:
    parts: list[bytes] = []
    where: dict[tuple[int, str], int] = {}
    size = 0

    def put(i: int, key: str, arr: np.ndarray) -> None:
        nonlocal size
        where[(i, key)] = size
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        raw += b"\0" * (-len(raw) % ALIGNMENT_BYTES)
        parts.append(raw)
        size += len(raw)

    for i, n in enumerate(graph.nodes):
        if n.weight is not None:
            for key in ("bias", "multiplier", "shift"):
                put(i, key, getattr(n, key).astype(np.int32))
    for i, n in enumerate(graph.nodes):
        if n.weight is not None and formats[i] == PALETTE4:
            pal, idx = palette4(n.weight)
            put(i, "palette", pal)
            put(i, "weight", idx)
        elif n.weight is not None:
            put(i, "weight", n.weight.astype(np.int8))
    return b"".join(parts), where


def build(graph: QGraph, storage: str = "auto") -> GraphProgram:
    """The device program of `graph` (steps in the module docstring); `storage` of the conv / linear weights:
    dense, palette4 (every layer with <= 16 distinct values) or auto (palette4 where it is smaller)."""
    if storage not in STORAGES:
        raise BadOptionError(f"unknown weight storage {storage!r}; choose one of {', '.join(STORAGES)}")
    _check(graph)
    nodes = graph.nodes
    alias = list(range(len(nodes)))
    for i, n in enumerate(nodes):
        if n.kind == "flatten":
            alias[i] = alias[n.inputs[0]]
    op_nodes = [i for i, n in enumerate(nodes) if n.kind not in ("input", "flatten")]
    op_of = {i: k for k, i in enumerate(op_nodes)}
    last = {i: 0 for i in set(alias)}
    for k, i in enumerate(op_nodes):
        for j in nodes[i].inputs:
            last[alias[j]] = max(last[alias[j]], k)
    out = alias[len(nodes) - 1]
    last[out] = len(op_nodes) - 1
    formats = {i: layer_storage(n.weight, storage) for i, n in enumerate(nodes) if n.weight is not None}
    buffers = tuple(Buffer(f"t{i}.{nodes[i].name}", _size(nodes[i].shape), op_of.get(i, 0), last[i])
                    for i in sorted(set(alias)))
    # a palette layer decodes one output channel's weights at a time into a scratch row live for its op only
    buffers += tuple(Buffer(f"row{i}.{nodes[i].name}", int(np.prod(nodes[i].weight.shape[1:])), op_of[i], op_of[i])
                     for i, f in formats.items() if f == PALETTE4)
    plan = plan_buffers(buffers, "greedy", ALIGNMENT_BYTES)
    offset = {i: plan[f"t{i}.{nodes[i].name}"].offset_bytes for i in sorted(set(alias))}
    blob, where = _blob(graph, formats)
    rows = np.full((len(op_nodes), OP_WORDS), 0, np.int64)
    for k, i in enumerate(op_nodes):
        n, r = nodes[i], rows[k]
        src = nodes[n.inputs[0]]
        r[0], r[1], r[2], r[3] = KIND[n.kind], offset[alias[n.inputs[0]]], -1, offset[i]
        r[4:8] = [where.get((i, key), -1) for key in ("weight", "bias", "multiplier", "shift")]
        a = n.attrs
        if formats.get(i) == PALETTE4:
            r[27], r[28], r[29] = PALETTE4, where[(i, "palette")], plan[f"row{i}.{n.name}"].offset_bytes
        if n.kind in ("conv", "maxpool", "avgpool"):
            (h, w, c), (ho, wo, co) = src.shape, n.shape
            r[8:15] = [h, w, c, ho, wo, co, a["kernel"][0]]
            r[15:18] = [a["kernel"][1], a["stride"][0], a["stride"][1]]
        if n.kind == "conv":
            r[18:25] = [a["padding"][0], a["padding"][1], a["groups"], src.zero_point, n.zero_point,
                        a["act_min"], a["act_max"]]
        elif n.kind == "linear":
            r[8], r[13] = _size(src.shape), n.shape[0]
            r[21:25] = [src.zero_point, n.zero_point, a["act_min"], a["act_max"]]
        elif n.kind == "mean":
            r[8], r[10], r[21], r[22], r[25], r[26] = a["count"], src.shape[-1], src.zero_point, n.zero_point, \
                a["multiplier"], a["shift"]
        elif n.kind == "add":
            other = nodes[n.inputs[1]]
            r[2], r[8], r[9] = offset[alias[n.inputs[1]]], _size(n.shape), a["left_shift"]
            r[21:25] = [src.zero_point, n.zero_point, a["act_min"], a["act_max"]]
            r[25:32] = [a["m1"], a["e1"], other.zero_point, a["m2"], a["e2"], a["mo"], a["eo"]]
        elif n.kind == "relu":
            r[8], r[23], r[24] = _size(n.shape), a["act_min"], a["act_max"]
    inp = graph.input
    return GraphProgram(rows.astype(np.int32), tuple(nodes[i].name or nodes[i].kind for i in op_nodes), blob, plan,
                        buffers, offset[0], _size(inp.shape), offset[out], _size(nodes[-1].shape),
                        inp.scale, inp.zero_point)
