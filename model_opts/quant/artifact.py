"""`Int8Artifact`: an `Int8Program` behind `har.measure.artifact.InferenceArtifact`, plus save/load.

Storage format (one file, `int8.safetensors`, no pickle): every integer array of the program (weights
int8, biases int32, multipliers int32, shifts int8, input inv_scale/offset float32) is a safetensors tensor
named `<op index>.<field>`; the op structure and scalar fields (kinds, zero points, clamps, padding, float
scales kept for reference) are JSON in the safetensors metadata under its single key "program" (sorted
keys, floats by `repr`; safetensors orders tensors by dtype and name, so the same program always gives
the same bytes). Loading rebuilds the records and re-validates
them; anything unreadable raises `BadDataError`.
A depthwise conv is kind "dwconv1d" with the conv's fields (weight int8 (C, 1, K)).
`weight_arrays` lists exactly the arrays a device stores: per conv/linear the int8 weight, int32 bias,
int32 multiplier and int8 shift (shifts lie in [-31, 30]); the per-channel input quantizer; and the int8
zero points / int32 pool multiplier as small arrays. The reference float scales are not included: the
integer math never reads them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load, save as st_save

from har.errors import BadDataError, DataNotFoundError
from har.measure.artifact import TensorLife, chain_lifetimes
from har.paths import atomic_write_bytes
from model_opts.quant import intref
from model_opts.quant.intref import (Conv1dInt8, DepthwiseConv1dInt8, GlobalAvgPoolInt8, InputQuant, Int8Program,
                                     LinearInt8, MaxPool1dInt8)

FILE_NAME = "int8.safetensors"
FORMAT = "har-memopt/int8-v1"
_KIND = {Conv1dInt8: "conv1d", LinearInt8: "linear", MaxPool1dInt8: "maxpool1d", GlobalAvgPoolInt8: "global_avg_pool",
         DepthwiseConv1dInt8: "dwconv1d"}
_ARRAY_FIELDS = ("weight", "bias", "multiplier", "shift", "weight_scale")


class Int8Artifact:
    """Integer-only inference (`intref.run`) of an `Int8Program`; scores are the dequantized int8 logits."""

    def __init__(self, program: Int8Program, name: str = "int8", classes: tuple[str, ...] = (),
                 info: dict | None = None):
        self.program = program
        self.name = name
        self.classes = tuple(classes)
        self.info = dict(info or {})

    def predict_int8(self, x: np.ndarray) -> np.ndarray:
        return intref.run(self.program, x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return intref.dequantize_output(self.program, self.predict_int8(x))

    def weight_arrays(self) -> dict[str, np.ndarray]:
        p = self.program
        arrays = {"input.inv_scale": p.input.inv_scale, "input.offset": p.input.offset,
                  "input.zero_point": np.array([p.input.zero_point], dtype=np.int8)}
        for i, op in enumerate(p.ops):
            if isinstance(op, (Conv1dInt8, DepthwiseConv1dInt8, LinearInt8)):
                arrays[f"{i}.weight"] = op.weight
                arrays[f"{i}.bias"] = op.bias
                arrays[f"{i}.multiplier"] = op.multiplier
                arrays[f"{i}.shift"] = op.shift.astype(np.int8)
                arrays[f"{i}.zero_points"] = np.array([op.input_zero_point, op.output_zero_point, op.act_min],
                                                      dtype=np.int8)
            elif isinstance(op, GlobalAvgPoolInt8):
                arrays[f"{i}.multiplier"] = np.array([op.multiplier], dtype=np.int32)
                arrays[f"{i}.shift_zero_points"] = np.array([op.shift, op.input_zero_point, op.output_zero_point],
                                                            dtype=np.int8)
        arrays["output.scale"] = np.array([p.output_scale], dtype=np.float32)
        return arrays

    def macs_per_window(self) -> int:
        return intref.macs_per_window(self.program)

    def tensor_lifetimes(self) -> list[TensorLife]:
        """float32 input -> int8 input -> int8 op outputs -> float32 dequantized scores."""
        p = self.program
        shapes = intref.tensor_shapes(p)
        names = ["input"] + [n for n, _ in shapes] + ["scores"]
        sizes = ([p.in_channels * p.length * 4] + [int(np.prod(s)) for _, s in shapes]
                 + [int(np.prod(shapes[-1][1])) * 4])
        return chain_lifetimes(names, sizes)

    def arena_bytes(self) -> int | None:
        return None

    def save(self, directory: str | Path) -> Path:
        return save(directory, self)


def _program_to_json(p: Int8Program) -> tuple[dict, dict[str, np.ndarray]]:
    tensors = {"input.inv_scale": np.ascontiguousarray(p.input.inv_scale, dtype=np.float32),
               "input.offset": np.ascontiguousarray(p.input.offset, dtype=np.float32)}
    ops = []
    for i, op in enumerate(p.ops):
        rec = {"kind": _KIND[type(op)]}
        for key, value in vars(op).items():
            if isinstance(value, np.ndarray):
                tensors[f"{i}.{key}"] = np.ascontiguousarray(value)
            else:
                rec[key] = value
        ops.append(rec)
    meta = {"input": {"scale": p.input.scale, "zero_point": p.input.zero_point}, "ops": ops,
            "output_scale": p.output_scale, "output_zero_point": p.output_zero_point,
            "in_channels": p.in_channels, "length": p.length}
    return meta, tensors


def save(directory: str | Path, artifact: Int8Artifact) -> Path:
    """Write `directory/int8.safetensors` atomically; deterministic bytes for the same program."""
    meta, tensors = _program_to_json(artifact.program)
    doc = {"format": FORMAT, "name": artifact.name, "classes": list(artifact.classes), "info": artifact.info,
           "program": meta}
    # one metadata key only: safetensors writes its metadata map in hash order, so several keys
    # would make the bytes differ between saves of the same program
    blob = st_save(tensors, metadata={"program": json.dumps(doc, sort_keys=True)})
    return atomic_write_bytes(Path(directory) / FILE_NAME, blob)


def load(directory: str | Path) -> Int8Artifact:
    path = Path(directory) / FILE_NAME
    if not path.is_file():
        raise DataNotFoundError(f"no int8 artifact in {directory} (expected {FILE_NAME})")
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="numpy") as fh:
            header = fh.metadata() or {}
        doc = json.loads(header["program"])
        if doc.get("format") != FORMAT:
            raise KeyError(f"format {doc.get('format')!r} is not {FORMAT}")
        tensors = st_load(path.read_bytes())
        meta = doc["program"]
        kinds = {v: k for k, v in _KIND.items()}
        ops = []
        for i, rec in enumerate(meta["ops"]):
            rec = dict(rec)
            cls = kinds[rec.pop("kind")]
            arrays = {k: tensors[f"{i}.{k}"] for k in _ARRAY_FIELDS if f"{i}.{k}" in tensors}
            ops.append(cls(**rec, **arrays))
        program = Int8Program(InputQuant(tensors["input.inv_scale"], tensors["input.offset"],
                                         meta["input"]["scale"], meta["input"]["zero_point"]),
                              tuple(ops), meta["output_scale"], meta["output_zero_point"], meta["in_channels"],
                              meta["length"]).validate()
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, SafetensorError) as exc:
        raise BadDataError(f"unusable int8 artifact {path}: {str(exc).splitlines()[0]}") from None
    return Int8Artifact(program, doc["name"], tuple(doc["classes"]), doc.get("info", {}))
