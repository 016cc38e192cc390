"""`InferenceArtifact`s of the system-level techniques, alone and combined, for `har.measure.measure`.

`apply(model, normalizer, input_shape, SystemOptsConfig(...))` flattens the model (`system_opts.flatten`)
and wraps the flat program as one of:
- `flat`: the flat executor (`system_opts.kernels.run_program`), fp32, every op allocates its output;
- `static-pool`: a `system_opts.buffer_pool.Session` over the planned arena (`arena_bytes()` = the plan's;
  `im2col_rows` trades latency for a smaller arena, see `buffer_pool.PoolConfig`);
- `lazy-weights`: the flat executor reading weights from a verified, memory-mapped weight file with the
  `lazy-release` policy (one layer's weights materialised at a time);
- `static-pool+lazy-weights`: the Session fed by the same lazy weight file.
`from_int8(int8_artifact, config)` does the same for an int8 `model_opts.quant` program (flattened by
`system_opts.flatten_int8`), names prefixed `int8-`: `int8-static-pool` is a
session of `system_opts.buffer_pool_c` (`int8_kernels="c"`, the default: compiled kernels) or
`system_opts.buffer_pool_int8` (`"numpy"`), with `arena_bytes()` = its device arena (int8 activations,
the kernels' int32 / int16 scratch, float input and scores); `int8-static-pool+lazy-weights` the same
session acquiring each layer's int8 arrays from the weight file; without `static_pool` the flat
executor's int8 kernels run. `int8_session(program, Int8PoolConfig(kernels=...))` builds either session.
Their `weight_arrays()` are exactly `Int8Artifact.weight_arrays()` (int8 weights, int32 biases,
multipliers, shifts, zero points, input quantizer, output scale): what a device stores, not the
Session's host-only float copies (`Int8Session.host_constant_bytes`).
The weight file holds the program's structure in its header metadata, so `load_program(path)` rebuilds a
runnable program from the file alone. `weight_arrays()` lists the packed (BN- and normaliser-folded)
arrays a device would store, plus the Session's derived constant (the 1/T row of the global pool).
`tensor_lifetimes()`: for `flat`/`lazy-weights` the logical tensors (input, each op's output), like
`TorchArtifact`; for the Session variants the physical buffers the arena holds (halo rows, phase-major
rows, im2col scratch included), so `measure`'s activation peak there is the planner's lower bound.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
from torch import nn

from har.errors import BadOptionError
from har.measure.artifact import TensorLife
from har.windows import Normalizer
from system_opts import buffer_pool, buffer_pool_int8, flatten
from system_opts.buffer_pool_c import CInt8Session
from system_opts.kernels import WeightSource, run_program
from system_opts.lazy_weights import LazyConfig, LazyWeights, WeightFileError, open_weights, save_weights

PROGRAM_KEY = "flat_program"


@dataclass(frozen=True)
class SystemOptsConfig:
    static_pool: bool = False
    lazy_weights: bool = False
    policy: str = "lazy-release"
    planner: str = "greedy"
    alignment_bytes: int = 16
    im2col_rows: int | None = None
    fold_normalizer: bool = True
    int8_kernels: str = "c"  # the int8 static pool's kernels: "c" (compiled) or "numpy" (reference)

    @property
    def default_name(self) -> str:
        parts = (["static-pool"] if self.static_pool else []) + (["lazy-weights"] if self.lazy_weights else [])
        return "+".join(parts) or "flat"

    @property
    def int8_name(self) -> str:
        return f"int8-{self.default_name}"

    def to_dict(self) -> dict:
        return asdict(self)


def save_program(path: str | Path, program: flatten.FlatProgram) -> Path:
    """One weight file holding the program's packed weights and, in its header, its op list."""
    return save_weights(path, program.weights, {PROGRAM_KEY: program.to_dict()})


def load_program(path: str | Path, config: LazyConfig = LazyConfig()) -> tuple[flatten.FlatProgram, LazyWeights]:
    """(program without in-memory weights, the verified weight store to run it with)."""
    store = open_weights(path, config)
    if PROGRAM_KEY not in store.metadata:
        store.close()
        raise WeightFileError(f"{path}: weight file holds no flat program")
    return flatten.FlatProgram.from_dict(store.metadata[PROGRAM_KEY], {}), store


class FlatArtifact:
    def __init__(self, program: flatten.FlatProgram, name: str, session: buffer_pool.Session | None = None,
                 store: LazyWeights | None = None):
        self.program, self.name, self.session, self.store = program, name, session, store

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.session is not None:
            return self.session.predict(x)
        return run_program(self.program, x, weights=self.store)

    def weight_arrays(self) -> dict[str, np.ndarray]:
        arrays = dict(self.program.weights) if self.program.weights else self.store.arrays()
        if self.session is not None:
            arrays.update(self.session.constants)
        return arrays

    def macs_per_window(self) -> int:
        return self.program.macs_per_window()

    def tensor_lifetimes(self) -> list[TensorLife]:
        if self.session is not None:
            return self.session.tensor_lifetimes()
        p = self.program
        last = len(p.ops) - 1
        first = {op.output: i for i, op in enumerate(p.ops)}
        used = {op.input: i for i, op in enumerate(p.ops)}
        return [TensorLife(t.name, t.size_bytes, first.get(k, 0), used.get(k, last)) for k, t in enumerate(p.tensors)]

    def arena_bytes(self) -> int | None:
        return None if self.session is None else self.session.plan.arena_bytes

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def apply(model: nn.Sequential, normalizer: Normalizer, input_shape: tuple[int, int],
          config: SystemOptsConfig = SystemOptsConfig(), weight_path: str | Path | None = None,
          name: str | None = None) -> FlatArtifact:
    """Flatten `model` and wrap it as the artifact `config` describes; lazy weights need `weight_path`
    (the weight file is written there, then opened and verified)."""
    program = flatten.apply(model, normalizer, input_shape, flatten.FlattenConfig(config.fold_normalizer))
    return from_program(program, config, weight_path, name)


def _via_weight_file(program: flatten.FlatProgram, config: SystemOptsConfig, weight_path: str | Path | None
                     ) -> tuple[flatten.FlatProgram, LazyWeights | None]:
    """With lazy weights: write the program's weight file and run from the file alone (the in-memory
    weights are dropped with the original `program`); otherwise the program unchanged and no store."""
    if not config.lazy_weights:
        return program, None
    if weight_path is None:
        raise BadOptionError("lazy weights need a weight_path to write the weight file to")
    save_program(weight_path, program)
    return load_program(weight_path, LazyConfig(config.policy))


def from_program(program: flatten.FlatProgram, config: SystemOptsConfig = SystemOptsConfig(),
                 weight_path: str | Path | None = None, name: str | None = None) -> FlatArtifact:
    program, store = _via_weight_file(program, config, weight_path)
    session = None
    if config.static_pool:
        session = buffer_pool.apply(program, buffer_pool.PoolConfig(config.planner, config.alignment_bytes,
                                                                    config.im2col_rows), weights=store)
    return FlatArtifact(program, name or config.default_name, session, store)


def int8_session(program, config: buffer_pool_int8.Int8PoolConfig = buffer_pool_int8.Int8PoolConfig(),
                 weights: Mapping[str, np.ndarray] | WeightSource | None = None) -> buffer_pool_int8.Int8Session:
    """An `Int8Session` (numpy kernels) or `CInt8Session` (`config.kernels == "c"`) running the int8
    `program` in a planned static arena. Chosen here, above both modules: the C session subclasses the
    numpy one, so the numpy module cannot name it without an import cycle."""
    if config.kernels == "c":
        return CInt8Session(program, config, weights)
    if config.kernels != "numpy":
        raise BadOptionError(f"unknown int8 kernels {config.kernels!r}; choose numpy or c")
    return buffer_pool_int8.Int8Session(program, config, weights)


class Int8FlatArtifact(FlatArtifact):
    """An int8 flat program (session or flat executor); stores what `Int8Artifact` stores."""

    def __init__(self, program: flatten.FlatProgram, int8_program, name: str,
                 session: buffer_pool_int8.Int8Session | None = None, store: LazyWeights | None = None):
        super().__init__(program, name, session, store)
        self.int8_program = int8_program

    def predict_int8(self, x: np.ndarray) -> np.ndarray:
        if self.session is not None:
            return self.session.predict_int8(x)
        p = self.program  # the same ops without the final dequantize
        return run_program(flatten.FlatProgram(p.ops[:-1], p.tensors[:-1], p.weights, p.meta), x, weights=self.store)

    def weight_arrays(self) -> dict[str, np.ndarray]:
        from model_opts.quant.artifact import Int8Artifact
        return Int8Artifact(self.int8_program).weight_arrays()


def from_int8(int8, config: SystemOptsConfig = SystemOptsConfig(static_pool=True),
              weight_path: str | Path | None = None, name: str | None = None) -> Int8FlatArtifact:
    """Wrap an `Int8Artifact` (or `Int8Program`) as `config` describes; names `int8-<config name>`.
    Lazy weights need `weight_path`: the flat int8 program is written there, and inference reads the file."""
    from system_opts import flatten_int8
    int8_program = getattr(int8, "program", int8)
    program, store = _via_weight_file(flatten_int8.apply(int8_program), config, weight_path)
    session = None
    if config.static_pool:
        pool = buffer_pool_int8.Int8PoolConfig(config.planner, config.alignment_bytes, config.int8_kernels)
        session = int8_session(program, pool, weights=store)
    return Int8FlatArtifact(program, int8_program, name or config.int8_name, session, store)
