"""The device program of an int8 network: its op records, its arena plan and its weight blob.

Steps of `device_program(prog, target, storage)`:
1. Flatten the `Int8Program` with int8 logits out (`system_opts.flatten_int8`, no dequantize) and drop the
   input quantizer and the float window: on a device the preprocessing (`har_pre.c`) quantizes each sample
   straight into the int8 input rows, so no float window is ever stored.
2. Lay the tensors out as the host session does (`system_opts.int8_layout.device_tensors`: halo rows, conv
   outputs phase-major under their max pool, which runs in place) and add each gemm's scratch for the
   target's loop order (`GEMM_MODES`): Cortex-M4 runs im2col16 (the whole padded input as int16, + 4 zeros,
   for SMLAD), the M0+ and the host run the dot order, which needs none. Each gemm's weight storage is
   decided here (`firmware.storage.layer_plan` on the array its dense order would read): a decoded format
   adds an int8 buffer for the decoded layer, live for that gemm's op only; CSR and palette-direct switch
   the layer to their own loop order (no scratch).
3. Plan the arena with `system_opts.planner` (greedy by size, 4-byte alignment: the widest device access is
   an int32) — the same planner the Python sessions use, so the figure is the planner's, not a formula.
4. Build one `OpRecord` per op (a decoded layer: a HAR_DECODE record first, writing the buffer its gemm
   reads): the `struct har_op` fields (har_int8.h) with pointers given as symbolic references
   (`("arena", byte_offset)` or `("weight", member)`) that `firmware.export` prints as C address
   constants and a host session could resolve to addresses.
5. Check the kernels' contract (`system_opts.cbuild.check_contract`, also run by the host C session):
   shifts in [-31, 30], multipliers >= 0, zero points and clamp bounds in int8, act_min <= act_max, finite
   input floats, and |partial sums| <= k * c_in * 255 * 128 < 2^31, so no int32 overflow can occur in C;
   a program outside it is refused before any C is written.
6. The weight blob: every array a device stores, wider types first (int32/float32, then uint16, then
   int8/uint8: a C struct of them has no padding), padded to a multiple of 4 bytes; a gemm's weights as
   its storage keeps them (stream + tables, or CSR's three arrays); on im2col16 targets gemm weights are
   stored as that kernel reads them: rows zero-padded to 4 terms, channel pairs interleaved (no tail loop,
   one pointer per operand in the SMLAD loop); `blob_bytes` is the exact image whose
   CRC32 the firmware checks.
A depthwise conv (`dwconv1d_q`) is one HAR_DWCONV record (no scratch; its (C, K) weight dense whatever
`storage` says, which applies to gemm layers only).
Limits: the op set of `model_opts.quant.intref`; little-endian targets only (the CRC is over memory bytes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware.storage import LayerStorage, WeightStorage, layer_plan
from har.errors import BadDataError, BadOptionError
from system_opts.buffer_pool import BufferSpec
from system_opts.cbuild import check_contract
from system_opts.flatten import FlatOp, FlatProgram
from system_opts.int8_layout import device_tensors
from system_opts.planner import MemoryPlan, plan_buffers

TARGETS = ("host", "cortex-m4", "cortex-m0plus")
GEMM_MODES = {"host": 0, "cortex-m4": 2, "cortex-m0plus": 0}  # har_int8.h HAR_GEMM_DOT / _IM2COL16
KIND = {"gemm": 1, "maxpool1d": 2, "global_avg_pool_q": 3, "decode": 5, "dwconv1d_q": 6}  # har_int8.h HAR_*
ARENA_ALIGNMENT_BYTES = 4


@dataclass(frozen=True)
class OpRecord:
    name: str
    kind: int
    ints: tuple[int, ...]
    pointers: tuple[tuple[str, object] | None, ...]
    floats: tuple[float, ...] = ()


@dataclass(frozen=True)
class Member:
    """One array of the weight blob: C name, C type, values."""

    name: str
    ctype: str
    values: np.ndarray


@dataclass(frozen=True)
class DeviceProgram:
    target: str
    program: FlatProgram  # int8 input rows -> int8 logits
    buffers: tuple[BufferSpec, ...]
    plan: MemoryPlan
    records: tuple[OpRecord, ...]
    members: tuple[Member, ...]
    input_offset_bytes: int  # where har_pre_quantize writes the (T, C) int8 rows
    logits_offset_bytes: int
    input_zero_point: int
    in_channels: int
    length: int
    n_classes: int
    storage: str = "dense"
    layers: tuple[tuple[str, LayerStorage], ...] = ()  # gemm op name -> how its weights are stored

    @property
    def arena_bytes(self) -> int:
        return self.plan.arena_bytes

    def blob_bytes(self) -> bytes:
        body = b"".join(np.ascontiguousarray(m.values).astype(m.values.dtype.newbyteorder("<")).tobytes()
                        for m in self.members)
        return body + bytes(-len(body) % 4)


_CTYPES = {"int8": "int8_t", "uint8": "uint8_t", "uint16": "uint16_t", "int32": "int32_t", "float32": "float"}


def _strip_quantizer(flat: FlatProgram) -> FlatProgram:
    """Step 1: the ops after quantize_input, tensors renumbered so the int8 input rows are tensor 0."""
    if not flat.ops or flat.ops[0].kind != "quantize_input":
        raise BadDataError("the int8 program does not start with its input quantizer")
    ops = tuple(FlatOp(op.kind, op.name, op.input - 1, op.output - 1, op.params, op.attrs) for op in flat.ops[1:])
    tensors = tuple(flat.tensors[1:])
    weights = {k: v for k, v in flat.weights.items() if not k.startswith(flat.ops[0].name + ".")}
    return FlatProgram(ops, tensors, weights, {**flat.meta, "input": "int8 rows (T, C) from har_pre.c"})


def _scratch(op: FlatOp, i: int, mode: int, tensors, rows_in: int) -> list[BufferSpec]:
    """im2col16: the whole padded input as int16, plus 4 zeros the last window's padding terms read."""
    if op.kind not in ("conv1d_q", "linear_q") or mode != 2:
        return []
    c_in = tensors[op.input].shape[-1]
    return [BufferSpec(f"{op.name}.xs", 1, rows_in * c_in + 4, "int16", i, i)]


def device_program(int8_program, target: str = "cortex-m4", storage: WeightStorage = WeightStorage()) -> DeviceProgram:
    """Steps 1-6 of the module docstring for an `Int8Program` (or anything holding one in `.program`), each
    gemm layer's weights stored as `storage` says (`firmware.storage`)."""
    from system_opts import flatten_int8
    if target not in TARGETS:
        raise BadOptionError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    prog = getattr(int8_program, "program", int8_program)
    full = flatten_int8.apply(prog, flatten_int8.FlattenInt8Config(dequantize_output=False))
    check_contract(full)  # with its input quantizer: the floats har_pre.c multiplies by
    flat = _strip_quantizer(full)
    dense_mode = GEMM_MODES[target]
    buffers, place, phases = device_tensors(flat)
    layers = _layer_storage(flat, dense_mode, storage)
    for i, op in enumerate(flat.ops):
        rows_in = place[op.input][2] + 2 * op.attrs.get("padding", 0)
        buffers.extend(_scratch(op, i, _mode(layers, i, dense_mode), flat.tensors, rows_in))
        if i in layers and layers[i].decodes:  # the decoded weights: a tensor live for this op only
            buffers.append(BufferSpec(f"{op.name}.w", 1, layers[i].n_values, "int8", i, i))
    plan = plan_buffers(buffers, "greedy", ARENA_ALIGNMENT_BYTES)
    offsets = {b.name: p.offset_bytes for b, p in zip(buffers, plan.buffers)}
    tensors = flat.tensors

    def at(tensor: int, lead_rows: int = 0) -> tuple[str, int]:
        b, row0, _ = place[tensor]
        spec = buffers[b]
        item = np.dtype(spec.dtype).itemsize
        return ("arena", offsets[spec.name] + (row0 - lead_rows) * spec.cols * item)

    records = []
    for i, op in enumerate(flat.ops):
        a = op.attrs
        weights = tuple(("weight", _member_name(p)) for p in op.params)
        if op.kind in ("conv1d_q", "linear_q"):
            mode = _mode(layers, i, dense_mode)
            if op.kind == "conv1d_q":
                pad, k, c_in = a["padding"], a["kernel_size"], a["in_channels"]
                n_in, rows, c_out = place[op.input][2], place[op.output][2], tensors[op.output].shape[1]
                ph = phases.get(op.output, 1)
            else:
                pad, k, c_in, n_in, rows, c_out, ph = 0, 1, tensors[op.input].shape[0], 1, 1, \
                    tensors[op.output].shape[0], 1
            ints = (n_in, c_in, k, pad, rows, c_out, ph, a["input_zero_point"], a["output_zero_point"],
                    a.get("act_min", -128), a.get("act_max", 127), mode)
            w_ref = weights[0]
            extra: tuple = (("arena", offsets[f"{op.name}.xs"]),) if mode == 2 else ()
            layer = layers.get(i)
            if layer is not None and layer.decodes:
                records.append(_decode_record(op.name, w_ref[1], layer, ("arena", offsets[f"{op.name}.w"])))
                w_ref = ("arena", offsets[f"{op.name}.w"])
            elif layer is not None and layer.format == "csr":  # p[2] val, p[6] row_ptr, p[7] col
                member = w_ref[1]
                w_ref = ("weight", f"{member}_val")
                extra = (("weight", f"{member}_row_ptr"), ("weight", f"{member}_col"))
            elif layer is not None and layer.format == "palette-direct":  # p[2] indices, p[6] codebook
                member = w_ref[1]
                w_ref = ("weight", f"{member}_z")
                extra = (("weight", f"{member}_codebook"),)
            ptrs = (at(op.input, pad), at(op.output), w_ref, *weights[1:], *extra)
            records.append(OpRecord(op.name, KIND["gemm"], tuple(int(v) for v in ints), ptrs))
        elif op.kind == "dwconv1d_q":  # har_int8.c dwconv; its weight (C, K) is stored dense on every target
            pad = a["padding"]
            ints = (place[op.input][2], a["in_channels"], a["kernel_size"], pad, place[op.output][2],
                    phases.get(op.output, 1), a["input_zero_point"], a["output_zero_point"], a["act_min"], a["act_max"])
            records.append(OpRecord(op.name, KIND["dwconv1d_q"], tuple(int(v) for v in ints),
                                    (at(op.input, pad), at(op.output), *weights)))
        elif op.kind == "maxpool1d":
            y = tensors[op.output].shape
            k = a["kernel_size"]
            ints = (y[0], y[1], k, int(phases.get(op.input) == k))
            records.append(OpRecord(op.name, KIND["maxpool1d"], ints, (at(op.input), at(op.output))))
        elif op.kind == "global_avg_pool_q":
            x = tensors[op.input].shape
            if x[0] != a["length"]:
                raise BadDataError(f"{op.name}: built for {a['length']} steps, gets {x[0]}")
            ints = (x[0], x[1], a["input_zero_point"], a["output_zero_point"])
            records.append(OpRecord(op.name, KIND["global_avg_pool_q"], tuple(int(v) for v in ints),
                                    (at(op.input), at(op.output), *weights)))
        else:
            raise BadDataError(f"{op.name}: op kind {op.kind!r} has no device kernel")
    members = _members(flat, prog, dense_mode, layers)
    last = len(tensors) - 1
    return DeviceProgram(target, flat, tuple(buffers), plan, tuple(records), members, at(0)[1], at(last)[1],
                         int(prog.input.zero_point), int(prog.in_channels), int(prog.length),
                         int(tensors[last].shape[0]), storage.format,
                         tuple((flat.ops[i].name, layers[i]) for i in sorted(layers)))


def _mode(layers: dict, i: int, dense_mode: int) -> int:
    fmt = getattr(layers.get(i), "format", "dense")
    return {"csr": 3, "palette-direct": 4}.get(fmt, dense_mode)  # har_int8.h HAR_GEMM_CSR, HAR_GEMM_PALETTE4


def _gemm_matrix(flat: FlatProgram, op: FlatOp) -> np.ndarray:
    """The (C_out, terms) dot-order int8 matrix the flat program stores for a gemm."""
    w = np.ascontiguousarray(flat.weights[op.params[0]])
    return w.reshape(w.shape[0], -1)


def _layer_storage(flat: FlatProgram, dense_mode: int, storage: WeightStorage) -> dict[int, LayerStorage]:
    """Step 2's storage decision: each gemm's `LayerStorage`, encoding the array its dense loop order reads."""
    out = {}
    for i, op in enumerate(flat.ops):
        if op.kind not in ("conv1d_q", "linear_q"):
            continue
        w2 = _gemm_matrix(flat, op)
        stored = _im2col16_weights(w2) if dense_mode == 2 else w2
        out[i] = layer_plan(stored.reshape(-1), w2, storage)
    return out


def _decode_record(name: str, member: str, layer: LayerStorage, dst: tuple[str, int]) -> OpRecord:
    """The HAR_DECODE op before a gemm: i = (format, n, src_bytes, bits, n_symbols, k); p = (src, dst,
    codebook, count, symbols), absent tables NULL."""
    names = {suffix for suffix, _ in layer.arrays}
    ptrs = (("weight", f"{member}_z"), dst, *((("weight", f"{member}_{t}") if t in names else None)
                                             for t in ("codebook", "count", "symbols")))
    return OpRecord(f"{name}.decode", KIND["decode"], layer.ints, ptrs)


def _member_name(param: str) -> str:
    return param.replace(".", "_")


def _im2col16_weights(w: np.ndarray) -> np.ndarray:
    """(C_out, terms) int8 -> the im2col16 kernel's layout (har_int8.c): rows zero-padded to a multiple of
    4 terms, a zero row after an odd last channel, channel pairs interleaved by 4 terms, each quad stored
    w0, w2, w1, w3."""
    c_out, terms = w.shape
    w = np.pad(w, ((0, c_out % 2), (0, -terms % 4)))
    pairs, tp = w.shape[0] // 2, w.shape[1]
    w = w.reshape(pairs, 2, tp // 4, 4)[..., [0, 2, 1, 3]]  # SXTB16 then pairs (w0, w1) and (w2, w3)
    return np.ascontiguousarray(w.transpose(0, 2, 1, 3)).reshape(pairs * 2, tp)


def _members(flat: FlatProgram, prog, dense_mode: int, layers: dict[int, LayerStorage]) -> tuple[Member, ...]:
    """Step 6: the input quantizer's floats and every op array, wider types first (so a C struct of them
    has no padding); a gemm's weights as its `LayerStorage` stores them (dense: in its loop order's layout,
    `_im2col16_weights` on im2col16 targets)."""
    arrays = [("input_inv_scale", np.asarray(prog.input.inv_scale, np.float32)),
              ("input_offset", np.asarray(prog.input.offset, np.float32))]
    for i, op in enumerate(flat.ops):
        for p in op.params:
            if i in layers and p == op.params[0]:
                arrays += [(_member_name(p) + (f"_{suffix}" if suffix else ""), v) for suffix, v in layers[i].arrays]
                continue
            arrays.append((_member_name(p), np.ascontiguousarray(flat.weights[p]).reshape(-1)))
    out = []
    for name, values in arrays:
        if str(values.dtype) not in _CTYPES:
            raise BadDataError(f"{name}: dtype {values.dtype} cannot be stored on the device")
        out.append(Member(name, _CTYPES[str(values.dtype)], np.ascontiguousarray(values).reshape(-1)))
    return tuple(sorted(out, key=lambda m: -m.values.dtype.itemsize))  # stable: members keep their order
