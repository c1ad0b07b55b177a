from .attention import masked_attention, self_attention
from .layer_norm import layer_norm
from .mlp import feed_forward


def block(x, ln_1, attn, ln_2, mlp, *, n_head, eps, window, q_idx, real, cache=None,
          attend=masked_attention):  # [B, T, d] -> [B, T, d]
    # Pre-norm residual block: each sublayer reads a normalised copy of the stream and adds its output to it.
    x = x + self_attention(layer_norm(x, **ln_1, eps=eps), **attn, n_head=n_head, window=window,
                           q_idx=q_idx, real=real, cache=cache, attend=attend)
    x = x + feed_forward(layer_norm(x, **ln_2, eps=eps), **mlp)
    return x
