"""ONNX Runtime peers of a trained CNN (fp32 and static int8), measured through the same `measure` path.

Steps of `build_peers(model, normalizer, x_calibration, ...)`:
1. Export `normalise -> CNN` to ONNX (`har.measure.onnx_export`: BatchNorm folded, byte-identical per
   weights and library versions). This file is the `ort-fp32` peer.
2. Quantise it with `onnxruntime.quantization.quantize_static` in QOperator format (QLinearConv,
   QGemm, int8 MaxPool), per-channel symmetric int8 weights, activations calibrated with MinMax on
   `OrtInt8Config.n_calibration_windows` windows drawn with a fixed seed from `x_calibration`, which must
   be TRAINING users' windows. Activations default to uint8 (ORT's documented fast U8S8 pairing for
   QOperator on x86-64; the bytes stored are the same as with int8). This file is the `ort-int8` peer.
3. Each file runs in an `OrtArtifact`: one InferenceSession on the CPU provider with
   `intra_op_num_threads=1` and sequential execution, so batch-1 latency compares single-threaded
   runtimes (the torch baseline is run with `torch.set_num_threads(1)` by the CLI, and the target
   device is single-core). `weight_arrays` are the file's initializers (for int8: int8 weights, int32
   biases, float scales, zero points, the normaliser and shape constants), lifetimes and MACs come from
   the graph (`har.measure.onnx_graph`); shapes of ONNX Runtime's own ops that ONNX shape inference
   does not know (QGemm) are measured by one batch-1 run with those values exposed as outputs.
If `onnx` or `onnxruntime` cannot be imported, `build_peers` returns no artifacts and a note saying why.
Limits: `arena_bytes` is None: ORT plans memory internally (BFC arena + memory patterns) and does not
report the plan, so model bytes use the activation peak of the stored graph.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from har.errors import BadDataError, BadOptionError
from har.measure.artifact import TensorLife
from har.windows import Normalizer

FP32_NAME = "ort-fp32"
INT8_NAME = "ort-int8"


def unavailable_reason() -> str | None:
    """None when the ONNX peers can be built, else why not (one line)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        return f"ONNX Runtime peers skipped: {exc}"
    return None


@dataclass(frozen=True)
class OrtInt8Config:
    n_calibration_windows: int = 512
    calibration_batch: int = 64
    per_channel: bool = True
    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    calibrate_method: str = "MinMax"
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PeerConfig:
    intra_op_threads: int = 1
    int8: OrtInt8Config = field(default_factory=OrtInt8Config)

    def to_dict(self) -> dict:
        return asdict(self)


class OrtArtifact:
    """ONNX Runtime inference of one serialised ONNX model (see the module docstring, step 3)."""

    def __init__(self, model_bytes: bytes, name: str, intra_op_threads: int = 1):
        import onnx
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        self.name = name
        self.model_bytes = model_bytes
        self.proto = onnx.load_from_string(model_bytes)
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name
        self._types = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: np.asarray(x, dtype=np.float32)})[0]

    def weight_arrays(self) -> dict[str, np.ndarray]:
        from har.measure.onnx_graph import stored_arrays
        return stored_arrays(self.proto)

    def _batch1_types(self):
        from har.measure.onnx_graph import batch1_types
        if self._types is None:
            self._types = batch1_types(self.proto, fill_missing=self._probe_types)
        return self._types

    def _probe_types(self, names: list[str]):
        """Shapes and dtypes of `names` measured by one batch-1 run that exposes them as outputs."""
        import onnx
        import onnxruntime as ort
        m = onnx.ModelProto()
        m.CopyFrom(self.proto)
        m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every value
        opts.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        dims = [d if isinstance(d, int) else 1 for d in self.session.get_inputs()[0].shape]
        outs = sess.run(names, {self._input: np.zeros(dims, dtype=np.float32)})
        return {n: (tuple(a.shape), a.dtype) for n, a in zip(names, outs)}

    def macs_per_window(self) -> int:
        from har.measure.onnx_graph import graph_macs
        return graph_macs(self.proto, self._batch1_types())

    def tensor_lifetimes(self) -> list[TensorLife]:
        from har.measure.onnx_graph import graph_lifetimes
        return graph_lifetimes(self.proto, self._batch1_types())

    def arena_bytes(self) -> int | None:
        return None


@contextlib.contextmanager
def _quiet_root_logger():
    # quantize_static logs advice ("consider pre-processing...") on the root logger at WARNING
    root = logging.getLogger()
    quiet = lambda record: record.levelno >= logging.ERROR  # noqa: E731
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def calibration_windows(x_train: np.ndarray, cfg: OrtInt8Config) -> np.ndarray:
    """A seeded subset (in original order) of training windows for int8 calibration."""
    if len(x_train) == 0:
        raise BadDataError("int8 calibration needs at least one training window")
    n = min(cfg.n_calibration_windows, len(x_train))
    idx = np.sort(np.random.default_rng(cfg.seed).choice(len(x_train), size=n, replace=False))
    return np.ascontiguousarray(x_train[idx], dtype=np.float32)


def quantize_int8(fp32_bytes: bytes, x_calibration: np.ndarray, cfg: OrtInt8Config = OrtInt8Config()) -> bytes:
    """Static int8 (QOperator) ONNX bytes of an fp32 ONNX model, calibrated on `x_calibration` windows."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    try:
        act, wt = QuantType[cfg.activation_type], QuantType[cfg.weight_type]
        method = CalibrationMethod[cfg.calibrate_method]
    except KeyError as exc:
        raise BadOptionError(f"unknown ORT quantisation option {exc}") from None
    input_name = onnx.load_from_string(fp32_bytes).graph.input[0].name
    x_cal = calibration_windows(x_calibration, cfg)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{input_name: x_cal[i:i + cfg.calibration_batch]}
                                  for i in range(0, len(x_cal), cfg.calibration_batch)])

        def get_next(self):
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(prefix="har-ort-int8-") as tmp, _quiet_root_logger():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32_bytes)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QOperator, per_channel=cfg.per_channel,
                        activation_type=act, weight_type=wt, calibrate_method=method)
        return dst.read_bytes()


@dataclass
class Peers:
    artifacts: dict[str, OrtArtifact]
    notes: list[str]


def build_peers(model: nn.Sequential, normalizer: Normalizer, x_calibration: np.ndarray,
                cfg: PeerConfig = PeerConfig()) -> Peers:
    """`ort-fp32` and `ort-int8` artifacts of `model` (or none, with a note, when ORT is not importable)."""
    reason = unavailable_reason()
    if reason is not None:
        return Peers({}, [reason])
    from har.measure.onnx_export import export_onnx
    _, n_channels, length = x_calibration.shape
    fp32 = export_onnx(model, normalizer, n_channels, length)
    int8 = quantize_int8(fp32, x_calibration, cfg.int8)
    arts = {FP32_NAME: OrtArtifact(fp32, FP32_NAME, cfg.intra_op_threads),
            INT8_NAME: OrtArtifact(int8, INT8_NAME, cfg.intra_op_threads)}
    return Peers(arts, [])
