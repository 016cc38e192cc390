"""The hybrid pipeline that composes model-centric and system-level steps (`python -m hybrid.run`)."""
from hybrid.cache import StageCache
from hybrid.execute import FoldContext
from hybrid.pipeline import PRESETS, VARIANTS, Built, Pipeline, PipelineConfig, preset, stage_key
from hybrid.steps import (CascadeStep, ContrastiveStep, OrtStep, PCAStep, PipelineError, PruneStep, QuantStep,
                          SystemStep)

__all__ = ["Pipeline", "PipelineConfig", "PipelineError", "PRESETS", "VARIANTS", "Built", "preset", "stage_key",
           "StageCache", "FoldContext", "PCAStep", "ContrastiveStep", "PruneStep", "QuantStep", "OrtStep",
           "CascadeStep", "SystemStep"]
