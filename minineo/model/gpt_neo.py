"""GPT-Neo's forward pass, and `GPTNeo`, the loaded model that runs it.

Dimensions: B = batch, T = new tokens, d = hidden size, V = vocabulary, L = layers.
"""
import numpy as np

from .attention import masked_attention
from .block import Layer, block
from .cache import Cache
from .checks import check_call, check_finite
from .embedding import embed, lm_head
from .hooks import NO_HOOK, attach, run_with_cache
from .layer_norm import layer_norm


def gpt_neo(ids, positions, params, config, q_idx, real, cache=None, attend=masked_attention,
            hook=NO_HOOK, resume=None, gelu=None):  # [B, T] -> [B, T, d]
    # q_idx [T]: the new tokens' sequence indices; real [B, N]: which indices are not padding.
    # resume: (block l, the stream entering it) to run only blocks l.. (activation patching keeps the rest).
    start, x = resume or (0, embed(ids, positions, params["wte"], params["wpe"], **hook))
    for i in range(start, config.num_layers):
        at = Layer(config.num_heads, config.layer_norm_epsilon, config.window(config.attention_layers[i]), q_idx,
                   real, None if cache is None else cache.layers[i], attend, hook.at(f"blocks.{i}"), gelu)
        x = block(x, **params["blocks"][i], at=at)
    return layer_norm(x, **params["ln_f"], eps=config.layer_norm_epsilon, **hook.at("ln_final"))


def padded_positions(mask, seen):  # [B, T] 0/1, [B] real tokens before -> [B, T]
    # As transformers' generate: a token's position counts only the real tokens before it, so a
    # left-padded sequence gets the positions it would have alone; pads get position 1.
    positions = seen[:, None] + np.cumsum(mask, axis=1) - 1
    return np.where(mask == 1, positions, 1)


class GPTNeo:
    """model(ids) -> logits. ids [T] or [B, T]; attention_mask (same shape, 1 = real token) for
    left-padded batches; cache=model.new_cache(B) to feed the sequence a piece at a time;
    hooks=[(name or names or predicate, fn)] to read or replace activations (minineo/model/hooks.py).
    attend: how attention is computed, masked_attention (the whole matrix) or a faster function
    that gives the same numbers (minineo.load passes minineo.fast.banded's); gelu likewise, None for
    the MLP's gelu_new (minineo.load passes minineo.fast.elementwise's)."""

    def __init__(self, config, params, tokenizer=None, source=None, attend=masked_attention, gelu=None):
        self.config, self.params, self.tokenizer, self.source = config, params, tokenizer, source
        self.attend, self.gelu = attend, gelu

    def __call__(self, ids, attention_mask=None, cache=None, hooks=(), resume=None):  # [B, T] -> [B, T, V] (or [T] -> [T, V])
        return self.logits(self.forward(ids, attention_mask, cache, hooks=hooks, resume=resume))

    def logits(self, h):  # [..., d] -> [..., V]
        return lm_head(h, self.params["wte"])

    def forward(self, ids, attention_mask=None, cache=None, hidden_states=None, hooks=(), resume=None):  # [B, T] -> [B, T, d]
        """The final hidden states (after ln_f). Pass a list as hidden_states to also receive the
        residual stream before the first block and after every block: L + 1 arrays [B, T, d].
        resume=(l, x): start at block l from the stream x [B, T, d] entering it (what an earlier run
        of the same ids computed), as activation patching does."""
        ids, mask, squeeze = check_call(self.config, ids, attention_mask, cache)
        if hidden_states is not None:
            hidden_states[:] = []
            last = f"blocks.{self.config.num_layers - 1}.hook_resid_post"
            hooks = [*hooks, (lambda name: name.endswith("hook_resid_pre") or name == last,
                              lambda x, hook: hidden_states.append(x))]
        hook = attach(hooks, self.config.num_layers, squeeze)
        if resume is not None and squeeze:   # the stream of ids [T] comes as [T, d]
            resume = (resume[0], resume[1][None])
        start = 0 if cache is None else cache.length            # the new tokens' first sequence index
        real = mask == 1 if cache is None else cache.update(mask == 1)   # [B, start + T]
        seen = real[:, :start].sum(axis=1)                      # [B] real tokens before these
        # A hooked run scores the whole [T, S] matrix, so that every pattern a hook sees is whole.
        h = gpt_neo(ids, padded_positions(mask, seen), self.params, self.config,
                    q_idx=np.arange(start, start + ids.shape[1]), real=real, cache=cache,
                    attend=self.attend if hook is NO_HOOK else masked_attention, gelu=self.gelu, hook=hook,
                    resume=resume)
        return h[0] if squeeze else h

    def run_with_cache(self, ids, names_filter=None, attention_mask=None, cache=None, fwd_hooks=()):  # -> logits, cache
        return run_with_cache(self, ids, names_filter, attention_mask, cache, fwd_hooks)

    def run_with_hooks(self, ids, fwd_hooks=(), attention_mask=None, cache=None):  # -> logits
        return self(ids, attention_mask, cache, hooks=fwd_hooks)

    def new_cache(self, batch_size=1):
        return Cache(self.config, batch_size)

    def check_finite(self, values, where=""):  # values computed by this model -> values, or a MinineoError saying why not
        return check_finite(values, self.params, self.source, where)
