"""GPT-Neo's forward pass, and `GPTNeo`, the loaded model that checks its inputs and runs it.

Dimensions: B = batch, T = new tokens, d = hidden size, V = vocabulary, L = layers.
"""
import numpy as np

from ..errors import MinineoError
from .attention import masked_attention
from .block import block
from .cache import Cache
from .embedding import embed, lm_head
from .layer_norm import layer_norm


def gpt_neo(ids, positions, params, config, q_idx, real, cache=None, hidden_states=None,
            attend=masked_attention):  # [B, T] -> [B, T, d]
    # q_idx [T]: the new tokens' sequence indices; real [B, N]: which indices are not padding.
    x = embed(ids, positions, params["wte"], params["wpe"])
    for i, (layer, kind) in enumerate(zip(params["blocks"], config.attention_layers)):
        if hidden_states is not None:
            hidden_states.append(x)
        x = block(x, **layer, n_head=config.num_heads, eps=config.layer_norm_epsilon,
                  window=config.window_size if kind == "local" else None,
                  q_idx=q_idx, real=real, cache=None if cache is None else cache.layers[i], attend=attend)
    if hidden_states is not None:
        hidden_states.append(x)
    return layer_norm(x, **params["ln_f"], eps=config.layer_norm_epsilon)


def padded_positions(mask, seen):  # [B, T] 0/1, [B] real tokens before -> [B, T]
    # As transformers' generate: a token's position counts only the real tokens before it, so a
    # left-padded sequence gets the positions it would have alone; pads get position 1.
    positions = seen[:, None] + np.cumsum(mask, axis=1) - 1
    return np.where(mask == 1, positions, 1)


class GPTNeo:
    """model(ids) -> logits. ids [T] or [B, T]; attention_mask (same shape, 1 = real token) for
    left-padded batches; cache=model.new_cache(B) to feed the sequence a piece at a time.
    attend: how attention is computed, masked_attention (the whole matrix) or a faster function
    that gives the same numbers (minineo.load passes minineo.fast.banded's)."""

    def __init__(self, config, params, tokenizer=None, source=None, attend=masked_attention):
        self.config, self.params, self.tokenizer, self.source = config, params, tokenizer, source
        self.attend = attend

    def __call__(self, ids, attention_mask=None, cache=None):  # [B, T] -> [B, T, V] (or [T] -> [T, V])
        return self.logits(self.forward(ids, attention_mask, cache))

    def logits(self, h):  # [..., d] -> [..., V]
        return lm_head(h, self.params["wte"])

    def forward(self, ids, attention_mask=None, cache=None, hidden_states=None):  # [B, T] -> [B, T, d]
        """The final hidden states (after ln_f). Pass a list as hidden_states to also receive the
        residual stream before the first block and after every block: L + 1 arrays [B, T, d]."""
        ids, mask, squeeze = self._check(ids, attention_mask, cache)
        start = 0 if cache is None else cache.length            # the new tokens' first sequence index
        real = mask == 1 if cache is None else cache.update(mask == 1)   # [B, start + T]
        seen = real[:, :start].sum(axis=1)                      # [B] real tokens before these
        h = gpt_neo(ids, padded_positions(mask, seen), self.params, self.config,
                    q_idx=np.arange(start, start + ids.shape[1]), real=real, cache=cache,
                    hidden_states=hidden_states, attend=self.attend)
        if squeeze and hidden_states is not None:
            hidden_states[:] = [x[0] for x in hidden_states]
        return h[0] if squeeze else h

    def new_cache(self, batch_size=1):
        return Cache(self.config, batch_size)

    def check_finite(self, values, where=""):  # values computed by this model -> values, or a MinineoError saying why not
        # NaN or inf in a checkpoint would otherwise come out as junk text or a perplexity of nan.
        # where: what the values belong to, for the message ("window 3 of 7 (tokens 512..2559): ").
        if np.isfinite(values).all():
            return values
        name = next((name for name, w in named_weights(self.params) if not np.isfinite(np.asarray(w)).all()), None)
        cause = (f"its weight {name} holds NaN or inf" if name else
                 "no weight holds NaN or inf, so an activation overflowed float32")
        raise MinineoError(f"{self.source}: {where}the model computed NaN or inf values ({cause})")

    def _check(self, ids, attention_mask, cache):
        ids = check_token_ids(ids, self.config.vocab_size)
        squeeze = ids.ndim == 1
        if ids.ndim not in (1, 2) or ids.size == 0:
            raise MinineoError(f"ids: expected a non-empty integer array [T] or [B, T], got shape {list(ids.shape)}")
        ids = ids.reshape(-1, ids.shape[-1])
        mask = np.ones(ids.shape, np.int64) if attention_mask is None else np.asarray(attention_mask)
        mask = mask.reshape(-1, mask.shape[-1]) if mask.ndim else mask
        if mask.shape != ids.shape or not np.isin(mask, (0, 1)).all():
            raise MinineoError(f"attention_mask: expected 0/1 values of shape {list(ids.shape)}, "
                               f"got shape {list(np.shape(attention_mask))}")
        past = 0 if cache is None else cache.length
        if cache is not None and cache.batch_size != len(ids):
            raise MinineoError(f"ids: batch of {len(ids)} sequences, but the cache holds {cache.batch_size}")
        has_real = (mask == 1).any(axis=1)   # [B]
        if cache is not None:
            has_real |= cache.real.any(axis=1)
        if not has_real.all():
            raise MinineoError("attention_mask: a sequence has no real token (a row of all zeros)")
        if past + ids.shape[1] > self.config.max_position_embeddings:
            raise MinineoError(f"sequence of {past + ids.shape[1]} tokens is longer than the model's "
                               f"max_position_embeddings ({self.config.max_position_embeddings})")
        return ids, mask.astype(np.int64), squeeze


def check_token_ids(ids, vocab_size, what="ids"):  # -> an integer array of ids in [0, vocab_size)
    # Floats are refused, not truncated: 3.7 is no token, and a silent cast would hide the mistake.
    ids = id_array(ids, what)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise MinineoError(f"{what}: token ids must be integers, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise MinineoError(f"{what}: token ids must be in [0, {vocab_size}), got {ids.min()}..{ids.max()}")
    return ids


def id_array(ids, what="ids"):  # np.asarray(ids), with a ragged list of ids named by its row
    try:
        return np.asarray(ids)
    except ValueError:   # rows of different lengths: NumPy cannot make an array of them
        raise MinineoError(f"{what}: {ragged_row(ids)}; a batch needs rows of one length (pad them on the "
                           "left and pass attention_mask)") from None


def ragged_row(rows, where="row"):  # nested lists NumPy cannot stack -> which row breaks the rectangle, in words
    def shape(row):
        return f"a list of {len(row)} ids" if isinstance(row, (list, tuple, np.ndarray)) else "a single id"
    for i, row in enumerate(rows):
        if shape(row) != shape(rows[0]):
            return f"{where} {i} is {shape(row)} where {where} 0 is {shape(rows[0])}"
    for i, row in enumerate(rows):   # every row alike at this level: the difference is deeper
        try:
            np.asarray(row)
        except ValueError:
            return ragged_row(row, f"{where} {i}, item")


def named_weights(params, prefix=""):  # the nested dict of weights -> (name, weight) pairs, e.g. "blocks.3.mlp.c_fc.w"
    items = params.items() if isinstance(params, dict) else enumerate(params)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            yield from named_weights(value, name + ".")
        else:
            yield name, value
