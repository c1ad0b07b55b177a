from dataclasses import dataclass, field

import numpy as np

from .attention import masked_attention, self_attention
from .hooks import NO_HOOK, Hook
from .layer_norm import layer_norm
from .mlp import feed_forward


@dataclass
class Layer:
    """One block in one call of the model: everything its functions need besides the weights and x,
    bound once. at(name, x) is a hook point (x itself unless a hook is attached); `**at.ln1` hands
    ln_1's hook points to layer_norm, and nothing at all when no hook is attached (`**at.mlp` likewise,
    and the faster gelu where one is set: the course swaps students' functions into the plain model,
    which sets none)."""
    n_head: int
    eps: float
    window: int | None           # a local layer's window; None for a global layer
    q_idx: np.ndarray            # [T] the new tokens' sequence indices
    real: np.ndarray             # [B, N] which sequence indices hold real tokens, not padding
    cache: object = None         # this layer's KV cache (minineo.model.cache), or None
    attend: object = masked_attention   # or a faster function of the same arguments and numbers
    hook: Hook = NO_HOOK         # this block's hook points, "blocks.{i}."
    gelu: object = None          # None: the MLP's gelu_new; or a faster function of the same numbers
    ln1: Hook = field(init=False)
    attn: Hook = field(init=False)
    ln2: Hook = field(init=False)
    mlp: dict = field(init=False)   # feed_forward's keyword arguments: its hook points and gelu, where set

    def __post_init__(self):
        self.ln1, self.attn, self.ln2 = (self.hook.at(part) for part in ("ln1", "attn", "ln2"))
        self.mlp = {**self.hook.at("mlp"), **({} if self.gelu is None else {"gelu": self.gelu})}

    def __call__(self, name, value):
        return self.hook(name, value)


def block(x, ln_1, attn, ln_2, mlp, at):  # [B, T, d] -> [B, T, d]
    # Pre-norm residual block: each sublayer reads a normalised copy of the stream and adds its output to it.
    x = at("hook_resid_pre", x)
    attn_out = self_attention(layer_norm(x, **ln_1, eps=at.eps, **at.ln1), **attn, at=at)
    x = at("hook_resid_mid", x + at("hook_attn_out", attn_out))
    mlp_out = feed_forward(layer_norm(x, **ln_2, eps=at.eps, **at.ln2), **mlp, **at.mlp)
    return at("hook_resid_post", x + at("hook_mlp_out", mlp_out))
