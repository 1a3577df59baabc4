"""Models (pure PyTorch): item encoder, quantizer, sequence encoder, generator, ranker, decoding."""
