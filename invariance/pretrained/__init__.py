"""Real CLIP and SigLIP towers: configs, linen modules, numpy-only loaders, tokenizers."""
