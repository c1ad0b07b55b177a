"""What the model's boundary checks before it runs (token ids, attention masks, caches) and after
(finite values): every user mistake becomes one MinineoError line. GPTNeo calls these; so do
minineo.text and minineo.train where ids arrive from a user."""
import numpy as np

from ..errors import MinineoError


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


def check_call(config, ids, attention_mask, cache):  # -> ids [B, T], mask [B, T] int64, whether ids was [T]
    ids = check_token_ids(ids, config.vocab_size)
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
    if past + ids.shape[1] > config.max_position_embeddings:
        raise MinineoError(f"sequence of {past + ids.shape[1]} tokens is longer than the model's "
                           f"max_position_embeddings ({config.max_position_embeddings})")
    return ids, mask.astype(np.int64), squeeze


def check_finite(values, params, source, where=""):  # values a model computed -> values, or a MinineoError saying why not
    # NaN or inf in a checkpoint would otherwise come out as junk text or a perplexity of nan.
    # where: what the values belong to, for the message ("window 3 of 7 (tokens 512..2559): ").
    if np.isfinite(values).all():
        return values
    name = next((name for name, w in named_weights(params) if not np.isfinite(np.asarray(w)).all()), None)
    cause = (f"its weight {name} holds NaN or inf" if name else
             "no weight holds NaN or inf, so an activation overflowed float32")
    raise MinineoError(f"{source}: {where}the model computed NaN or inf values ({cause})")


def named_weights(params, prefix=""):  # the nested dict of weights -> (name, weight) pairs, e.g. "blocks.3.mlp.c_fc.w"
    items = params.items() if isinstance(params, dict) else enumerate(params)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            yield from named_weights(value, name + ".")
        else:
            yield name, value
