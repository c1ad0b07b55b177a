"""Lesson 2: layer norm."""
import numpy as np

from ...model.layer_norm import layer_norm
from .base import Case, Exercise, Mistake, rand, strided


def layer_norm_cases():
    g, b = rand(11, 8, scale=0.5, offset=1), rand(12, 8, scale=0.5)
    g7, b7 = rand(13, 7, scale=0.5, offset=1), rand(14, 7, scale=0.5)
    return [
        Case("random x [2, 3, 8], learnt g and b", lambda: ((rand(15, 2, 3, 8), g, b), {})),
        Case("d = 7 (odd) and a non-contiguous x", lambda: ((strided(rand(16, 4, 7, scale=3)), g7, b7), {})),
        Case("a tiny spread (std 0.001, variance 1e-6 < eps): where epsilon goes matters",
             lambda: ((rand(17, 3, 8, scale=1e-3), g, b), {})),
        Case("eps = 0.1 passed by the caller (x with std 0.3)", lambda: ((rand(18, 3, 8, scale=0.3), g, b), {"eps": 0.1})),
        Case("large values (around 300, spread 1): float32 loses E[x^2] - E[x]^2 to rounding",
             lambda: ((rand(19, 3, 8, offset=300), g, b), {})),
    ]


def _unbiased(x, g, b, eps=1e-5):
    return g * (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps) + b


LAYER_NORM = Exercise("layer_norm", 2, layer_norm, layer_norm_cases, [
    Mistake("uses the unbiased variance (dividing by d - 1, as np.var(ddof=1) or torch.var do)",
            "the biased variance, the mean of the squared deviations (divide by d)", _unbiased),
    Mistake("puts epsilon outside the square root: (x - mean) / (sqrt(var) + eps)",
            "divide by sqrt(var + eps)",
            lambda x, g, b, eps=1e-5: g * (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + eps) + b),
    Mistake("ignores the `eps` argument (a fixed 1e-5)", "use the eps the caller passes (config.layer_norm_epsilon)",
            lambda x, g, b, eps=1e-5: layer_norm(x, g, b)),
    Mistake("computes the variance as E[x^2] - E[x]^2, which float32 rounding ruins when the mean is large "
            "next to the spread", "the mean of (x - mean)^2, as np.var does",
            lambda x, g, b, eps=1e-5: g * (x - x.mean(-1, keepdims=True)) / np.sqrt(
                (x * x).mean(-1, keepdims=True) - x.mean(-1, keepdims=True) ** 2 + eps) + b),
    Mistake("divides by the variance, not the standard deviation", "divide by sqrt(var + eps)",
            lambda x, g, b, eps=1e-5: g * (x - x.mean(-1, keepdims=True)) / (x.var(-1, keepdims=True) + eps) + b),
    Mistake("leaves out the learnt scale g and shift b", "return g * x_hat + b",
            lambda x, g, b, eps=1e-5: layer_norm(x, 1, 0, eps).astype(x.dtype)),
    Mistake("normalises over the wrong axis (axis 0, across tokens)", "normalise each token over its d features (axis -1)",
            lambda x, g, b, eps=1e-5: g * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + b),
])
