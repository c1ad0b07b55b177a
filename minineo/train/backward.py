"""The backward pass of every layer of GPT-Neo, beside minineo.model's forward: plain NumPy functions,
each named after its forward with `_backward`.

Dimensions: B = batch, T = tokens, d = hidden size, H = heads, hd = head size, I = MLP width,
V = vocabulary, N = tokens scored (B x (T - 1)). A gradient is named after what it is the gradient
of: d_x is dLoss/dx, with x's shape. A backward function takes the gradient of its forward's output
and what its forward read; the two that need an activation the forward computed inside
(self_attention, block) have a `_forward` twin that returns it.
"""
import math

import numpy as np

from ..model.attention import MASKED, merge_heads, softmax, split_heads
from ..model.layer_norm import layer_norm
from ..model.linear import linear
from ..model.mlp import gelu_new


def lookup_backward(d_rows, ids, n_rows):  # [B, T, d], [B, T] -> [n_rows, d]: the gradient of table[ids]
    d_table = np.zeros((n_rows, d_rows.shape[-1]), d_rows.dtype)
    np.add.at(d_table, ids, d_rows)   # a row looked up by several tokens gets their sum (`+=` would keep one)
    return d_table


def embed_backward(d_x, ids, positions, wte, wpe):  # [B, T, d] -> d_wte [V, d], d_wpe [P, d]
    return lookup_backward(d_x, ids, len(wte)), lookup_backward(d_x, positions, len(wpe))


def layer_norm_backward(d_y, x, g, eps=1e-5):  # [..., d], [..., d], [d] -> d_x [..., d], d_g [d], d_b [d]
    centred = x - x.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)
    x_hat = centred * inv_std
    d_x_hat = d_y * g
    # The mean and the variance depend on every feature, hence the two averages subtracted.
    d_x = inv_std * (d_x_hat - d_x_hat.mean(axis=-1, keepdims=True)
                     - x_hat * (d_x_hat * x_hat).mean(axis=-1, keepdims=True))
    return d_x, _sum_rows(d_y * x_hat), _sum_rows(d_y)


def linear_backward(d_y, x, w):  # [..., n_out], [..., n_in], [n_out, n_in] -> d_x, d_w [n_out, n_in], d_b [n_out]
    rows_y, rows_x = d_y.reshape(-1, d_y.shape[-1]), x.reshape(-1, x.shape[-1])
    return d_y @ w, rows_y.T @ rows_x, rows_y.sum(axis=0)


GELU_C = math.sqrt(2 / math.pi)


def gelu_new_backward(d_y, x):  # [...], [...] -> [...]
    # y = x/2 (1 + tanh(u)), u = c (x + 0.044715 x^3): dy/dx = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) du/dx
    t = np.tanh(GELU_C * (x + 0.044715 * (x * x * x)))
    return d_y * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * (x * x)))


def feed_forward_backward(d_y, x, h, c_fc, c_proj):  # [B, T, d], [B, T, d], h [B, T, I] -> d_x, grads
    # h = linear(x, **c_fc), the pre-activation that the forward computed on its way
    d_a, d_proj_w, d_proj_b = linear_backward(d_y, gelu_new(h), c_proj["w"])
    d_x, d_fc_w, d_fc_b = linear_backward(gelu_new_backward(d_a, h), x, c_fc["w"])
    return d_x, {"c_fc": {"w": d_fc_w, "b": d_fc_b}, "c_proj": {"w": d_proj_w, "b": d_proj_b}}


def attention_backward(d_out, q, k, v, probs):  # [B, H, T, hd] x 4, probs [B, H, T, T] -> d_q, d_k, d_v
    # out = probs @ v, probs = softmax(scores), scores = q @ k.T where the mask allows, MASKED elsewhere
    d_v = probs.swapaxes(-1, -2) @ d_out
    d_probs = d_out @ v.swapaxes(-1, -2)
    # softmax's Jacobian; a masked score has probability exactly 0, so it gets no gradient (as with -inf)
    d_scores = probs * (d_probs - (d_probs * probs).sum(axis=-1, keepdims=True))
    return d_scores @ k, d_scores.swapaxes(-1, -2) @ q, d_v   # no 1/sqrt(hd) in the forward, none here


def self_attention_forward(x, q_proj, k_proj, v_proj, out_proj, *, n_head, mask):  # [B, T, d] -> [B, T, d], saved
    # model.attention's self_attention over the whole [T, T] mask, keeping what the backward needs
    q, k, v = (split_heads(linear(x, **p), n_head) for p in (q_proj, k_proj, v_proj))   # [B, H, T, hd]
    probs = softmax(np.where(mask, q @ k.swapaxes(-1, -2), MASKED))                     # [B, H, T, T]
    heads = merge_heads(probs @ v)                                                       # [B, T, d]
    return linear(heads, **out_proj), (q, k, v, probs, heads)


def self_attention_backward(d_y, x, saved, q_proj, k_proj, v_proj, out_proj, *, n_head):  # -> d_x [B, T, d], grads
    q, k, v, probs, heads = saved
    d_heads, d_out_w, d_out_b = linear_backward(d_y, heads, out_proj["w"])
    d_qkv = attention_backward(split_heads(d_heads, n_head), q, k, v, probs)
    grads, d_x = {"out_proj": {"w": d_out_w, "b": d_out_b}}, 0
    for name, proj, d in zip(("q_proj", "k_proj", "v_proj"), (q_proj, k_proj, v_proj), d_qkv):
        d_in, d_w, _ = linear_backward(merge_heads(d), x, proj["w"])   # q, k and v have no bias
        d_x, grads[name] = d_x + d_in, {"w": d_w}
    return d_x, grads


def block_forward(x, ln_1, attn, ln_2, mlp, *, n_head, eps, mask):  # [B, T, d] -> [B, T, d], saved
    # model.block.block, keeping the activations the backward needs
    a = layer_norm(x, **ln_1, eps=eps)
    attended, attn_saved = self_attention_forward(a, **attn, n_head=n_head, mask=mask)
    x1 = x + attended
    m = layer_norm(x1, **ln_2, eps=eps)
    h = linear(m, **mlp["c_fc"])   # [B, T, I]
    return x1 + linear(gelu_new(h), **mlp["c_proj"]), (x, a, attn_saved, x1, m, h)


def block_backward(d_y, saved, ln_1, attn, ln_2, mlp, *, n_head, eps):  # [B, T, d] -> d_x [B, T, d], grads
    # Each residual branch adds its input's gradient to the one that flows straight through.
    x, a, attn_saved, x1, m, h = saved
    d_m, mlp_grads = feed_forward_backward(d_y, m, h, **mlp)
    d_x1, d_g2, d_b2 = layer_norm_backward(d_m, x1, ln_2["g"], eps)
    d_x1 = d_x1 + d_y
    d_a, attn_grads = self_attention_backward(d_x1, a, attn_saved, **attn, n_head=n_head)
    d_x, d_g1, d_b1 = layer_norm_backward(d_a, x, ln_1["g"], eps)
    return d_x + d_x1, {"ln_1": {"g": d_g1, "b": d_b1}, "attn": attn_grads,
                        "ln_2": {"g": d_g2, "b": d_b2}, "mlp": mlp_grads}


def lm_head_backward(d_logits, h, wte):  # [..., V], [..., d], [V, d] -> d_h [..., d], d_wte [V, d]
    # The head is linear(h, wte) with no bias; wte's gradient adds to the embedding's (tied weights).
    d_h, d_wte, _ = linear_backward(d_logits, h, wte)
    return d_h, d_wte


def cross_entropy(logits, targets):  # [N, V], [N] -> [N] each token's -log p(target), and p [N, V]
    # [N, V] arrays are the biggest of a step (50,257 columns), so p is computed in the memory of `shifted`.
    shifted = logits - logits.max(axis=-1, keepdims=True)   # exp cannot overflow
    target = shifted[np.arange(len(targets)), targets]
    p = np.exp(shifted, out=shifted)
    total = p.sum(axis=-1, keepdims=True)
    p /= total
    return np.log(total[:, 0]) - target, p


def cross_entropy_backward(p, targets):  # [N, V], [N] -> [N, V]: the gradient of the summed losses, in p's memory
    p[np.arange(len(targets)), targets] -= 1   # d(-log p_t)/d logit_j = p_j - [j == t]
    return p


def _sum_rows(x):  # [..., d] -> [d]
    return x.reshape(-1, x.shape[-1]).sum(axis=0)
