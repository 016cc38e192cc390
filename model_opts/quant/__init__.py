"""int8 quantization: post-training static (`ptq.apply`), quantization-aware (`qat.apply`), the
integer-only numpy reference (`intref`, the specification for a C port) and the saved `Int8Artifact`.

Layer records for other packages (e.g. system_opts' flat executor) live in `model_opts.quant.intref`:
`Int8Program(input: InputQuant, ops: tuple[Conv1dInt8 | MaxPool1dInt8 | GlobalAvgPoolInt8 | LinearInt8, ...],
output_scale, output_zero_point, in_channels, length)`; run with `intref.run(program, x_float)`.
"""
from model_opts.quant.artifact import Int8Artifact, load, save
from model_opts.quant.config import QATConfig, QuantConfig
from model_opts.quant.intref import Int8Program

__all__ = ["Int8Artifact", "Int8Program", "QATConfig", "QuantConfig", "load", "save"]
