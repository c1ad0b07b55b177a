"""The methods an interpretability lesson uses (ARENA 1.2; TransformerLens's names), on minineo's hook points.

    logit_lens                each layer's residual stream read through ln_final and the unembedding
    lens_top_tokens, lens_loss  what it would predict at each layer, and how well, on a text
    direct_logit_attribution  how much each head, each MLP and the embeddings add to one token's logit
    ablate_heads              hooks that zero a head's output (z), or set it to its mean
    patch_grid                activation patching: a clean run's activation put into a corrupted run,
                              one [layer, position] (or [layer, head]) at a time, and a metric of each

Dimensions: L layers, B batch, T tokens, d hidden, V vocabulary, H heads, hd head size. A cache from
ids [T] has no batch axis; the functions take either, as the cache holds it.
"""
import numpy as np

from ..errors import MinineoError
from ..model.layer_norm import layer_norm


def residual_stack(cache, num_layers):  # -> [L + 1, ..., T, d]: the stream entering each block, then the last out
    return np.stack([cache["resid_pre", i] for i in range(num_layers)] + [cache["resid_post", num_layers - 1]])


def logit_lens(model, cache):  # -> [L + 1, ..., T, V]: layer i's stream as if it were the last
    # Row L is the model's own output: the last stream through the same ln_final and unembedding.
    ln_f = model.params["ln_f"]
    return model.logits(layer_norm(residual_stack(cache, model.config.num_layers), **ln_f,
                                   eps=model.config.layer_norm_epsilon))


def lens_top_tokens(model, cache, k=5):  # -> [L + 1, ..., T, k] token ids, most likely first
    return np.argsort(-logit_lens(model, cache), axis=-1, kind="stable")[..., :k]


def lens_loss(model, cache, ids):  # -> [L + 1]: each layer's mean next-token loss (nats) on ids
    targets = np.asarray(ids)[..., 1:, None]                                  # [..., T - 1, 1]
    losses = []
    for logits in logit_lens(model, cache):                                   # a layer at a time: [..., T, V]
        logits = logits[..., :-1, :].astype(np.float64)
        top = logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)) + top
        losses.append(float((log_z - np.take_along_axis(logits, targets, -1)).mean()))
    return np.array(losses)


def direct_logit_attribution(model, cache, token, position=-1):
    """What each part of the model writes into the residual stream at `position`, read as token's logit
    through ln_final with the scale the run had (cache["ln_final.hook_scale"]), as TransformerLens's
    apply_ln_to_stack: layer norm is linear once its scale is fixed, so the parts add up to the logit.
    -> {"embed": [...], "heads": [..., L, H], "attn_bias": [..., L], "mlp": [..., L], "ln_bias": float}."""
    config, params = model.config, model.params
    d, H = config.hidden_size, config.num_heads
    scale = cache["scale"][..., position, :]                                  # [..., 1]
    direction = params["ln_f"]["g"] * np.asarray(params["wte"][token])        # [d]: ln_f's gain, then unembedding

    def read(part):  # [..., d] (or [..., H, d]) written into the stream -> [...] (or [..., H]): its share of the logit
        by = scale.reshape(scale.shape + (1,) * max(0, part.ndim - scale.ndim))   # [..., 1] or [..., 1, 1]
        return ((part - part.mean(axis=-1, keepdims=True)) / by) @ direction

    heads, biases, mlps = [], [], []
    for i, layer in enumerate(params["blocks"]):
        out_proj = layer["attn"]["out_proj"]
        z = cache["z", i][..., position, :, :]                                 # [..., H, hd]
        w = np.asarray(out_proj["w"]).reshape(d, H, -1)                       # [d, H, hd]: each head's columns
        heads.append(read(np.einsum("...hk,dhk->...hd", z, w)))                # [..., H]
        biases.append(read(out_proj["b"]))
        mlps.append(read(cache["mlp_out", i][..., position, :]))
    embed = read(cache["embed"][..., position, :] + cache["pos_embed"][..., position, :])
    return {"embed": embed, "heads": np.stack(heads, axis=-2), "attn_bias": np.stack(biases, axis=-1),
            "mlp": np.stack(mlps, axis=-1), "ln_bias": float(params["ln_f"]["b"] @ np.asarray(params["wte"][token]))}


def ablate_heads(heads, how="zero", cache=None):
    """fwd_hooks that ablate each (layer, head) in `heads` in its z, before out_proj mixes the heads:
    how="zero" writes 0; how="mean" writes the head's mean z over the batch and positions of `cache`."""
    if how not in ("zero", "mean") or (how == "mean") != (cache is not None):
        raise MinineoError(f"ablate_heads: how must be 'zero', or 'mean' with a cache to take the mean from, "
                           f"got how={how!r} and {'a' if cache is not None else 'no'} cache")
    by_layer = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def hook_for(layer, chosen):
        def ablate(z, hook):   # [..., T, H, hd]
            z = z.copy()
            fill = 0 if how == "zero" else cache["z", layer].reshape(-1, *z.shape[-2:]).mean(axis=0)[chosen]
            z[..., chosen, :] = fill
            return z
        return ablate
    return [(f"blocks.{layer}.attn.hook_z", hook_for(layer, chosen)) for layer, chosen in sorted(by_layer.items())]


LOGITS_BYTES = 256 << 20   # what one batch of patched runs may hold in logits
PATCHED = {"resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "z": "attn.hook_z"}


def patch_grid(model, clean_ids, corrupted_ids, metric, what="resid_pre", attention_mask=None):
    """Activation patching: the corrupted run with one piece of the clean run's `what` put in, for every
    piece, and metric(logits) of each. -> [L, T] for "resid_pre", "attn_out", "mlp_out" (one position
    of one layer), [L, H] for "z" (one head of one layer, every position). logits are shaped as
    model(corrupted_ids) gives them. Nothing below the patched layer is computed again: each run resumes
    from the corrupted stream entering that layer, and a layer's patches run together in batches."""
    clean, corrupted = np.asarray(clean_ids), np.asarray(corrupted_ids)
    if clean.shape != corrupted.shape:
        raise MinineoError(f"patch_grid: the clean ids have shape {list(clean.shape)} and the corrupted ids "
                           f"{list(corrupted.shape)}; patching needs runs of the same length")
    if what not in PATCHED:
        raise MinineoError(f"patch_grid: what must be one of {', '.join(PATCHED)}, got {what!r}")
    L, squeeze = model.config.num_layers, clean.ndim == 1
    ids = corrupted.reshape(-1, corrupted.shape[-1])                                      # [B, T]
    mask = None if attention_mask is None else np.asarray(attention_mask).reshape(ids.shape)
    B, T = ids.shape
    wanted = [f"blocks.{i}.{PATCHED[what]}" for i in range(L)]
    _, theirs = model.run_with_cache(clean.reshape(ids.shape), names_filter=wanted, attention_mask=mask)
    _, base = model.run_with_cache(ids, attention_mask=mask,
                                   names_filter=[f"blocks.{i}.hook_resid_pre" for i in range(L)])
    pieces = model.config.num_heads if what == "z" else T
    # patched runs together, as many as keep their logits [C * B, T, V] within LOGITS_BYTES
    together = max(1, min(pieces, LOGITS_BYTES // (B * T * model.config.vocab_size * 4)))
    grid = np.empty((L, pieces))
    for layer in range(L):
        for first in range(0, pieces, together):
            chosen = np.arange(first, min(first + together, pieces))                 # the pieces patched now
            stream = np.repeat(base["resid_pre", layer][None], len(chosen), axis=0)  # [C, B, T, d]
            hooks = []
            if what == "resid_pre":   # put into the stream the resumed runs start from
                put_pieces(stream, theirs[wanted[layer]], chosen)
            else:
                hooks = [(wanted[layer], put_piece(theirs[wanted[layer]], chosen, B))]
            C = len(chosen)
            logits = model(np.tile(ids, (C, 1)), None if mask is None else np.tile(mask, (C, 1)),
                           hooks=hooks, resume=(layer, stream.reshape(C * B, T, -1)))
            for c, run in zip(chosen, logits.reshape(C, B, T, -1)):
                grid[layer, c] = metric(run[0] if squeeze else run)
    return grid


def put_pieces(runs, clean, chosen):  # run c of runs [C, B, T, ...] gets piece chosen[c] of clean [B, T, ...]
    c = np.arange(len(chosen))
    if runs.ndim == 4:    # a position: [C, B, T, d]
        runs[c, :, chosen] = clean[:, chosen].swapaxes(0, 1)
    else:                 # a head: [C, B, T, H, hd]
        runs[c, :, :, chosen] = np.moveaxis(clean[:, :, chosen], 2, 0)


def put_piece(clean, chosen, B):  # a hook: run c of the batch gets piece chosen[c] (a position, or a head) of clean
    def patch(act, hook):   # [C * B, T, d], or [C * B, T, H, hd] for z
        act = act.reshape(len(chosen), B, *act.shape[1:]).copy()
        put_pieces(act, clean, chosen)
        return act.reshape(len(chosen) * B, *act.shape[2:])
    return patch
