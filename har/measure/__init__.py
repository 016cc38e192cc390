"""Measurement: the one code path (`measure` -> `Footprint`) that every reported figure comes from."""
from har.measure.artifact import InferenceArtifact, TensorLife, TorchArtifact, chain_lifetimes

__all__ = ["InferenceArtifact", "TensorLife", "TorchArtifact", "chain_lifetimes"]
