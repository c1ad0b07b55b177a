import math

import numpy as np

from .hooks import NO_HOOK
from .linear import linear


def gelu_new(x):  # [...] -> [...]
    # GPT-2's tanh approximation of GELU; math.sqrt keeps the constant a Python float, so float32 stays float32.
    # x * x * x is x**3: NumPy's float32 power takes a slow path for negative x (~70x slower).
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x))))


def feed_forward(x, c_fc, c_proj, hook=NO_HOOK, gelu=None):  # [B, T, d] -> [B, T, d]; the MLP of each block
    # gelu: None for gelu_new, or a faster function of the same numbers (minineo.fast's, for a prompt)
    pre = hook("hook_pre", linear(x, **c_fc))        # d -> inner (4d)
    post = gelu_new(pre) if gelu is None else gelu(pre)
    return linear(hook("hook_post", post), **c_proj)   # inner -> d
