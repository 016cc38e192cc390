"""Where the int8 static pool keeps its tensors: the device buffers of a flat int8 program (shared by
the numpy and C sessions) and the numpy session's work buffers.

- `device_tensors(program)`: one buffer per tensor, channel-last rows; a tensor read by a conv (conv1d_q
  or depthwise dwconv1d_q: both read padding rows) with padding p gets p halo rows each side; a conv
  output read by a k-wide max pool is stored phase-major
  and the pool runs in place over its first block (see `system_opts.buffer_pool_int8`, step 1), so the
  pool output has no buffer of its own.
- `numpy_layout(program, left_shifts)`: those plus, per conv / linear / global pool, the numpy kernels' device
  int32 accumulator tile, their host scratch (float im2col and GEMM output, int64 requantisation
  temporaries) and prepared constants (float weights, bias and requantisation tiles); a depthwise conv
  has an int32 tap scratch (rows, C) and K int32 weight tiles (rows, C) instead of im2col and float GEMM.
- `make_arena(specs, plan)`: one 64-byte-aligned byte array and a named view per planned buffer.
Known limits: the accumulator tile is (rows, C_out): what vectorised numpy needs, not what a device
kernel needs (the C session plans none).
"""
from __future__ import annotations

import numpy as np

from system_opts.buffer_pool import BufferSpec
from system_opts.flatten import FlatProgram
from system_opts.planner import MemoryPlan

_ARENA_BASE_ALIGN_BYTES = 64
F32_EXACT_TERMS = (1 << 24) // (255 * 128)
CONVS = ("conv1d_q", "dwconv1d_q")  # ops that read halo rows and may write a phase-major output
# per-channel int64 rows derived by prepare: multiplier, left, right (e), half, shift (31 + e), neg; the
# tiles repeat some of them over the output rows
TILES = ("mul", "half", "shift", "neg", "left")


def float_type(terms: int) -> str:
    return "float32" if terms <= F32_EXACT_TERMS else "float64"


def nk_layout(c_out: int, rows: int) -> bool:
    # OpenBLAS's small-matrix SGEMM mallocs a packing buffer for such column tails in the non-transposed
    # case (measured in system_opts.flatten); a 1-row product goes to GEMV, which does not
    return rows > 1 and 1 <= c_out % 16 <= 8


def device_tensors(program: FlatProgram) -> tuple[list[BufferSpec], dict, dict]:
    """Device buffers of the program's tensors (halo rows, phase-major conv outputs shared with their
    pool, step 1 of the module docstring), the (buffer, first row, rows) of each tensor and the phase
    count of each conv output stored phase-major."""
    ops, tensors = program.ops, program.tensors
    last = len(ops) - 1
    producer = {op.output: i for i, op in enumerate(ops)}
    consumer = {op.input: i for i, op in enumerate(ops)}
    pooled = {op.input: op.output for op in ops
              if op.kind == "maxpool1d" and op.input in producer and ops[producer[op.input]].kind in CONVS}
    device: list[BufferSpec] = []
    place: dict[int, tuple[int, int, int]] = {}
    phases: dict[int, int] = {}
    for t, spec in enumerate(tensors):
        if t in pooled.values():
            continue  # lives in its conv input's buffer
        end = pooled.get(t, t)
        cons = consumer.get(end)
        lead = ops[cons].attrs["padding"] if cons is not None and ops[cons].kind in CONVS else 0
        b = len(device)
        if len(spec.shape) == 1:
            rows, cols, n = 1, spec.shape[0], 1
            place[t] = (b, 0, 1)
        elif end != t:
            k = ops[consumer[t]].attrs["kernel_size"]
            t_out, cols = tensors[end].shape
            n = t_out * k  # floor mode: the pool never reads the remainder rows, so they are not computed
            rows = lead + max(n, t_out + lead)
            place[t], place[end], phases[t] = (b, lead, n), (b, lead, t_out), k
        else:
            n, cols = spec.shape
            rows = lead + n + lead
            place[t] = (b, lead, n)
        device.append(BufferSpec(spec.name, rows, cols, spec.dtype, producer.get(t, 0),
                                 consumer.get(end, last), lead, n, phases.get(t, 1)))
    return device, place, phases


def numpy_layout(program: FlatProgram, left_shifts: set[str]):
    """`device_tensors` plus, per op, the numpy kernels' device accumulator, host work buffers and
    prepared-weight buffers (written by `prepare`)."""
    ops, tensors = program.ops, program.tensors
    device, place, phases = device_tensors(program)
    host: list[BufferSpec] = []
    prepared: list[BufferSpec] = []

    def buf(name: str, rows: int, cols: int, dtype: str, i: int, into: list[BufferSpec]) -> None:
        into.append(BufferSpec(name, rows, cols, dtype, i, i))

    for i, op in enumerate(ops):
        name, out_shape = op.name, tensors[op.output].shape
        if op.kind == "quantize_input":
            for key in ("inv_scale", "offset"):
                buf(f"{name}.{key}", *out_shape, "float32", i, prepared)
            continue
        if op.kind in ("conv1d_q", "linear_q"):
            rows, c_out = (place[op.output][2], out_shape[1]) if op.kind == "conv1d_q" else (1, out_shape[0])
            terms = op.attrs.get("kernel_size", 1) * tensors[op.input].shape[-1]
            ft = float_type(terms)
            buf(f"{name}.cols", rows, terms, ft, i, host)
            buf(f"{name}.wf", *((c_out, terms) if nk_layout(c_out, rows) else (terms, c_out)), ft, i, prepared)
            buf(f"{name}.bias", rows, c_out, "int32", i, prepared)
        elif op.kind == "dwconv1d_q":  # exact int32 products, no float (K terms per output)
            rows, c_out, ft = place[op.output][2], out_shape[1], "int32"
            buf(f"{name}.cols", rows, c_out, ft, i, host)
            buf(f"{name}.wt", op.attrs["kernel_size"] * rows, c_out, "int32", i, prepared)
            buf(f"{name}.bias", rows, c_out, "int32", i, prepared)
        elif op.kind == "global_avg_pool_q":
            rows, c_out = 1, out_shape[0]
            ft = float_type(op.attrs["length"])
            buf(f"{name}.cols", *tensors[op.input].shape, ft, i, host)
        else:
            continue
        buf(f"{name}.acc", rows, c_out, "int32", i, device)
        if op.kind != "dwconv1d_q":
            buf(f"{name}.accf", rows, c_out, ft, i, host)
        buf(f"{name}.x64", rows, c_out, "int64", i, host)
        buf(f"{name}.t64", rows, c_out, "int64", i, host)
        n_ch = 2 if op.kind == "global_avg_pool_q" else c_out  # 2: numpy mallocs for ufuncs on 1 element
        buf(f"{name}.rows", 6, n_ch, "int64", i, prepared)
        for key in TILES if name in left_shifts else TILES[:-1]:
            buf(f"{name}.{key}", rows, c_out, "int64", i, prepared)
    return device, host, prepared, place, phases


def make_arena(specs: list[BufferSpec], plan: MemoryPlan) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    raw = np.zeros(plan.arena_bytes + _ARENA_BASE_ALIGN_BYTES, dtype=np.uint8)
    base = -raw.ctypes.data % _ARENA_BASE_ALIGN_BYTES
    arena = raw[base:base + plan.arena_bytes]
    views = {s.name: arena[p.offset_bytes:p.offset_bytes + s.size_bytes].view(s.dtype).reshape(s.rows, s.cols)
             for s, p in zip(specs, plan.buffers)}
    return arena, views
