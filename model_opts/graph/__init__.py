"""Any supported `nn.Module` as a dataflow graph: import (`fx_import`), float execution, int8 quantization
and the integer-only reference of the graph (`quantize`, `intref`)."""
