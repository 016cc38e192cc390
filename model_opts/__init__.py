"""Model-centric optimisations: int8 quantization, structured pruning, PCA, contrastive encoding, cascades."""
