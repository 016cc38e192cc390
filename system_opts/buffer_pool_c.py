"""Static buffer pool for the int8 flat program with C kernels (`system_opts/csrc/har_int8.c`): the
`Int8Session` layout and plan, run by compiled loops instead of ~15 numpy calls per layer.

What changes against `system_opts.buffer_pool_int8.Int8Session` (numpy kernels):
- Device arena: the same tensors in the same places (halo rows, phase-major conv outputs pooled in
  place), but a conv / linear needs one int32 row of C_out accumulators instead of a (T, C_out) tile,
  and the global pool none (it sums one channel at a time in a register). So the arena shrinks by the
  largest conv's accumulator tile, and it is what a device running this C file needs.
- No host scratch and no host constants: the kernels read the flat program's arrays as stored (int8
  weights (C_out, K * C_in), int32 bias and multiplier, int8 shift), from memory or straight from the
  memory-mapped weight file (a depthwise conv's weight (C, K) included: `dwconv` reads it as stored).
Steps of `CInt8Session(program)`:
1. Plan the device buffers (`device_tensors` plus the accumulator rows) with `system_opts.planner`.
2. Bind every op to one `struct har_op` in a ctypes array: its kind, shapes, zero points and clamp
   range, and pointers to its planned input / output rows (a conv's input pointer is its first halo
   row: the kernel writes the zero-point halo itself, since other buffers share those bytes).
3. In-memory weights: write their pointers into the table once; `run` is then one C call (`har_run`).
   A `WeightSource` (lazy weight file): per op, acquire, write the pointers, run the op, release.
Arithmetic is TFLite's int8 (see the C file), bit-exact with `model_opts.quant.intref` and with the
numpy session; `tests/unit/test_buffer_pool_c.py` checks both on real models and extreme values.
Known limits: batch 1; needs a C compiler at first use (`system_opts.cbuild`); the host build is not
the device build (no CMSIS-NN kernels), so its latency is the host's, not a microcontroller's.
"""
from __future__ import annotations

import ctypes
from types import SimpleNamespace

import numpy as np

from har.errors import BadDataError
from system_opts import cbuild
from system_opts.buffer_pool import BufferSpec
from system_opts.buffer_pool_int8 import Int8Session
from system_opts.int8_layout import device_tensors

# dtypes a kernel reads its arrays as; anything else would be silently misread through a pointer
_PARAM_DTYPES = {"quantize_input": ("float32", "float32"),
                 "conv1d_q": ("int8", "int32", "int32", "int8"),
                 "dwconv1d_q": ("int8", "int32", "int32", "int8"),
                 "linear_q": ("int8", "int32", "int32", "int8"),
                 "global_avg_pool_q": ("int32", "int8")}
_WEIGHT_SLOT = 2  # p[0], p[1] are the op's input and output; its arrays follow in `op.params` order


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class CInt8Session(Int8Session):
    """`Int8Session` with compiled kernels; same constructor, `run`, `predict` and `logits`."""

    def _layout(self):
        self._left_shifts()  # validates the multipliers, as the numpy session does
        for op in self.program.ops:  # the kernels' whole contract, one op's arrays resident at a time
            arrays = self.weights.acquire(op.params)
            try:
                cbuild.check_contract(SimpleNamespace(ops=(op,), weights=dict(zip(op.params, arrays))))
            finally:
                self.weights.release(op.params)
        self._lib = cbuild.library()
        self._table = (cbuild.HarOp * len(self.program.ops))()
        self._keep: list[np.ndarray] = []
        device, place, phases = device_tensors(self.program)
        for i, op in enumerate(self.program.ops):
            if self._time_major(op):
                a = op.attrs
                n_pad = place[op.input][2] + 2 * a["padding"]
                device.append(BufferSpec(f"{op.name}.xt", a["in_channels"], n_pad, "int16", i, i))
                device.append(BufferSpec(f"{op.name}.acc", place[op.output][2], 1, "int32", i, i))
        return device, [], [], place, phases

    def _time_major(self, op) -> bool:
        return op.kind == "conv1d_q" and \
            op.attrs["kernel_size"] * op.attrs["in_channels"] < self.config.time_major_max_terms

    def _bind(self, op):
        i = self.program.ops.index(op)
        entry = self._table[i]
        x, y, attrs, tensors = self._data(op.input), self._data(op.output), op.attrs, self.program.tensors
        ints: list[int] = []
        ptrs = [_address(x), _address(y)]
        if op.kind == "quantize_input":
            ints = [x.shape[0], x.shape[1], attrs["zero_point"]]  # what a NaN input value becomes
        elif op.kind in ("conv1d_q", "linear_q"):
            if op.kind == "conv1d_q":
                p = attrs["padding"]
                ptrs[0] = _address(self._padded(op.input, p))
                n_in, c_in, k = self._place[op.input][2], attrs["in_channels"], attrs["kernel_size"]
                rows, c_out, phases = self._place[op.output][2], tensors[op.output].shape[1], \
                    self._phases.get(op.output, 1)
            else:
                n_in, c_in, k, p, rows, c_out, phases = 1, tensors[op.input].shape[0], 1, 0, 1, \
                    tensors[op.output].shape[0], 1
            mode = cbuild.GEMM_TIME_MAJOR if self._time_major(op) else cbuild.GEMM_DOT
            ints = [n_in, c_in, k, p, rows, c_out, phases, attrs["input_zero_point"],
                    attrs["output_zero_point"], attrs.get("act_min", -128), attrs.get("act_max", 127), mode]
            ptrs += [0, 0, 0, 0]  # weights: written by prepare
            if self._time_major(op):
                ptrs += [_address(self._views[f"{op.name}.xt"]), _address(self._views[f"{op.name}.acc"])]
        elif op.kind == "dwconv1d_q":  # har_int8.c dwconv: its input pointer is the first halo row too
            p = attrs["padding"]
            ptrs[0] = _address(self._padded(op.input, p))
            ints = [self._place[op.input][2], attrs["in_channels"], attrs["kernel_size"], p, self._place[op.output][2],
                    self._phases.get(op.output, 1), attrs["input_zero_point"], attrs["output_zero_point"],
                    attrs["act_min"], attrs["act_max"]]
            ptrs += [0, 0, 0, 0]  # weights: written by prepare
        elif op.kind == "maxpool1d":
            k = attrs["kernel_size"]
            ints = [y.shape[0], y.shape[1], k, int(self._phases.get(op.input) == k)]
        elif op.kind == "global_avg_pool_q":
            if x.shape[0] != attrs["length"]:
                raise BadDataError(f"{op.name}: built for {attrs['length']} steps, gets {x.shape[0]}")
            ints = [x.shape[0], x.shape[1], attrs["input_zero_point"], attrs["output_zero_point"]]
        elif op.kind == "dequantize":
            ints = [x.size, attrs["zero_point"]]
            entry.f[0] = float(np.float32(attrs["scale"]))
        entry.kind = cbuild.KIND["gemm" if op.kind in ("conv1d_q", "linear_q") else op.kind]
        entry.i[:len(ints)] = [int(v) for v in ints]
        entry.p[:len(ptrs)] = ptrs
        dtypes = _PARAM_DTYPES.get(op.kind, ())
        keep = self._static
        lib, ref = self._lib, ctypes.byref(entry)

        def prepare(*arrays: np.ndarray) -> None:
            for j, (a, dt) in enumerate(zip(arrays, dtypes)):
                if a.dtype != dt or not a.flags.c_contiguous:
                    raise BadDataError(f"{op.name}: array {op.params[j]} is {a.dtype}"
                                       f"{'' if a.flags.c_contiguous else ' (strided)'}, the C kernel reads {dt}")
                entry.p[_WEIGHT_SLOT + j] = _address(a)
            if keep:
                self._keep.extend(arrays)  # the table points into them for the session's life

        def run_op() -> None:
            lib.har_op_run(ref)
        return prepare, run_op

    def run(self, window: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Output (K,) of one un-normalised (C, T) float32 window: a view into the arena unless `out`."""
        if not self._static:
            return super().run(window, out)
        if window.shape != self._input.shape:
            raise BadDataError(f"expected one window of shape {self._input.shape}, got {window.shape}")
        np.copyto(self._input, window)
        self._lib.har_run(self._table, len(self._table))
        if out is None:
            return self._output
        np.copyto(out, self._output)
        return out
