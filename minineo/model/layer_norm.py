import numpy as np

from .hooks import NO_HOOK


def layer_norm(x, g, b, eps=1e-5, hook=NO_HOOK):  # [..., d] -> [..., d]
    # Each token's features are centred and scaled to unit variance, then given a learned scale and shift.
    centred = x - x.mean(axis=-1, keepdims=True)
    variance = (centred * centred).mean(axis=-1, keepdims=True)   # np.var, without computing the mean twice
    scale = hook("hook_scale", np.sqrt(variance + eps))           # [..., 1]
    return g * hook("hook_normalized", centred / scale) + b
