"""Measurement: the one code path (`measure` -> `Footprint`) that every reported figure comes from.

`measure(artifact, x, y, MeasureConfig())` fills a `Footprint` for anything implementing
`InferenceArtifact` (fp32 torch, int8 model, flat executor, ONNX Runtime peer). The ONNX Runtime peers
live in `har.measure.peers` (imported on demand: onnx/onnxruntime are optional), memray helpers in
`har.measure.memprofile`, the CLI in `python -m har.measure`.
"""
from har.measure.activations import activation_naive_bytes, activation_peak_bytes, live_bytes_per_op
from har.measure.artifact import InferenceArtifact, TensorLife, TorchArtifact, TracedChainArtifact, chain_lifetimes
from har.measure.footprint import BYTE_FIELDS, FIELDS, Footprint, MeasureConfig, measure
from har.measure.memprofile import AllocationSite, MemoryProfile, ProfilerBusyError, profile

__all__ = ["InferenceArtifact", "TensorLife", "TorchArtifact", "TracedChainArtifact", "chain_lifetimes", "Footprint", "MeasureConfig",
           "measure", "FIELDS", "BYTE_FIELDS", "activation_naive_bytes", "activation_peak_bytes",
           "live_bytes_per_op", "MemoryProfile", "AllocationSite", "ProfilerBusyError", "profile"]
