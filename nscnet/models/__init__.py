"""The models (BASENet, VAENet, NSCNet) and their parts (backbones, heads, sampler, SpecAugment)."""
