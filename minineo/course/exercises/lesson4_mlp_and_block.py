"""Lesson 4: the MLP and the transformer block."""
import math
from dataclasses import replace

import numpy as np

from ...model import attention as attention_module
from ...model import mlp as mlp_module
from ...model.attention import self_attention
from ...model.block import Layer, block
from ...model.layer_norm import layer_norm
from ...model.mlp import feed_forward, gelu_new
from .base import Case, Exercise, Mistake, patched, rand, strided
from .lesson3_attention import ATTENTION, attention_weights


def exact_gelu(x):  # the erf GELU, which GPT-Neo's tanh approximation approximates
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * x * (1 + erf(x.astype(np.float64) / math.sqrt(2)))).astype(x.dtype)


def gelu_new_cases():
    return [
        Case("49 points from -6 to 6", lambda: ((np.linspace(-6, 6, 49, dtype=np.float32),), {})),
        Case("random [2, 3, 4] (std 3), non-contiguous", lambda: ((strided(rand(60, 2, 3, 4, scale=3)),), {})),
        Case("large magnitudes (up to 10^4): expect 0 far left, x far right",
             lambda: ((np.array([-1e4, -300, -30, 30, 300, 1e4], np.float32),), {})),
    ]


GELU_NEW = Exercise("gelu_new", 4, gelu_new, gelu_new_cases, [
    Mistake("computes the exact GELU with erf", "GPT-Neo uses GPT-2's tanh approximation, "
            "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))", exact_gelu),
    Mistake("uses the sigmoid approximation x * sigmoid(1.702 x)", "the tanh approximation",
            lambda x: x / (1 + np.exp(-1.702 * x))),
    Mistake("has x^2 where the formula has x^3", "x + 0.044715 * x^3",
            lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x)))),
    Mistake("leaves out the factor 0.5", "0.5 * x * (1 + tanh(...))", lambda x: 2 * gelu_new(x)),
    Mistake("is a ReLU", "the tanh approximation of GELU", lambda x: np.maximum(x, 0)),
])


def mlp_weights(seed, d, inner):
    return ({"w": rand(seed, inner, d, scale=0.5), "b": rand(seed + 1, inner)},
            {"w": rand(seed + 2, d, inner, scale=0.3), "b": rand(seed + 3, d)})


def feed_forward_cases():
    c_fc, c_proj = mlp_weights(61, 6, 24)
    return [
        Case("batch 2, 3 tokens, d 6, inner 24", lambda: ((rand(65, 2, 3, 6), c_fc, c_proj), {})),
        Case("large x (std 30) and a non-contiguous x", lambda: ((strided(rand(66, 2, 3, 6, scale=30)), c_fc, c_proj), {})),
        Case("d 5, inner 7 (odd sizes)", lambda: ((rand(67, 1, 4, 5), *mlp_weights(68, 5, 7)), {})),
    ]


FEED_FORWARD = Exercise("feed_forward", 4, feed_forward, feed_forward_cases, [
    Mistake("uses the exact (erf) GELU", "gelu_new, the tanh approximation",
            patched(feed_forward, mlp_module, gelu_new=exact_gelu)),
    Mistake("uses a ReLU", "gelu_new", patched(feed_forward, mlp_module, gelu_new=lambda x: np.maximum(x, 0))),
    Mistake("has no activation between the two linear layers", "gelu_new(x @ W_fc.T + b_fc)",
            patched(feed_forward, mlp_module, gelu_new=lambda x: x)),
    Mistake("leaves out the biases", "x @ W.T + b in both layers",
            lambda x, c_fc, c_proj: gelu_new(x @ c_fc["w"].T) @ c_proj["w"].T),
])


def block_cases():
    d, H, B, T = 12, 3, 2, 5
    weights = dict(ln_1={"g": rand(70, d, scale=0.3, offset=1), "b": rand(71, d, scale=0.3)},
                   attn=dict(zip(["q_proj", "k_proj", "v_proj", "out_proj"], attention_weights(72, d))),
                   ln_2={"g": rand(77, d, scale=0.3, offset=1), "b": rand(78, d, scale=0.3)},
                   mlp=dict(zip(["c_fc", "c_proj"], mlp_weights(79, d, 4 * d))))
    real = np.ones((B, T), bool)
    padded = real.copy()
    padded[0, :1] = False

    def case(x, **settings):
        return lambda: ((x,), dict(weights, at=Layer(**{**dict(n_head=H, eps=1e-5, window=None, q_idx=np.arange(T),
                                                                 real=real), **settings})))
    return [
        Case("global, batch 2, 3 heads of size 4", case(rand(83, B, T, d))),
        Case("local, window 2, row 0 left-padded", case(rand(84, B, T, d), window=2, real=padded)),
        Case("eps = 0.5 passed by the caller", case(rand(85, B, T, d), eps=0.5)),
        Case("a stream of large values (std 20), non-contiguous", case(strided(rand(86, B, T, d, scale=20)))),
    ]


def _block_variant(order):  # a block whose sublayers are wired by `order`(x, attend, mlp, ln_1, ln_2)
    def variant(x, ln_1, attn, ln_2, mlp, at):
        return order(x, lambda h: self_attention(h, **attn, at=at), lambda h: feed_forward(h, **mlp),
                     lambda h: layer_norm(h, **ln_1, eps=at.eps), lambda h: layer_norm(h, **ln_2, eps=at.eps))
    return variant


BLOCK = Exercise("block", 4, block, block_cases, [
    Mistake("normalises after adding (post-norm, as the original Transformer)",
            "pre-norm: x = x + attention(layer_norm(x)); x = x + mlp(layer_norm(x))",
            _block_variant(lambda x, a, m, n1, n2: n2((lambda y: y + m(y))(n1(x + a(x)))))),
    Mistake("leaves out the residual connections", "add each sublayer's output to the stream: x = x + ...",
            _block_variant(lambda x, a, m, n1, n2: m(n2(a(n1(x)))))),
    Mistake("leaves out the residual connection around the MLP", "x = x + mlp(layer_norm(x))",
            _block_variant(lambda x, a, m, n1, n2: (lambda y: m(n2(y)))(x + a(n1(x))))),
    Mistake("uses ln_1 for both sublayers", "ln_1 before attention, ln_2 before the MLP",
            _block_variant(lambda x, a, m, n1, n2: (lambda y: y + m(n1(y)))(x + a(n1(x))))),
    Mistake("ignores the `eps` argument (a fixed 1e-5)", "pass eps to both layer norms",
            lambda x, *args, at, **weights: block(x, *args, **weights, at=replace(at, eps=1e-5))),
    Mistake(ATTENTION.mistakes[0].what, ATTENTION.mistakes[0].fix,
            patched(block, attention_module, attention=ATTENTION.mistakes[0].fn)),
])
