"""System-level optimisations: flattened execution plan, planned static arena, lazy weight loading."""
from system_opts.artifacts import (FlatArtifact, Int8FlatArtifact, SystemOptsConfig, from_int8, int8_session,
                                   load_program, save_program)
from system_opts.buffer_pool import PoolConfig, Session
from system_opts.buffer_pool_int8 import Int8PoolConfig, Int8Session
from system_opts.flatten import FlatOp, FlatProgram, FlattenConfig, TensorSpec, UnsupportedModuleError
from system_opts.kernels import run_program
from system_opts.lazy_weights import LazyConfig, LazyWeights, WeightFileError, open_weights, save_weights
from system_opts.planner import GreedyPlanner, LinearPlanner, MemoryPlan, PlanError, plan_buffers

__all__ = ["FlatArtifact", "SystemOptsConfig", "load_program", "save_program", "PoolConfig", "Session", "FlatOp",
           "FlatProgram", "FlattenConfig", "TensorSpec", "UnsupportedModuleError", "run_program", "LazyConfig",
           "LazyWeights", "WeightFileError", "open_weights", "save_weights", "GreedyPlanner", "LinearPlanner",
           "MemoryPlan", "PlanError", "plan_buffers", "Int8FlatArtifact", "from_int8", "Int8PoolConfig",
           "Int8Session", "int8_session"]
