"""The loss of a batch and the gradient of every weight: GPT-Neo's forward, keeping its activations,
then the backward functions of minineo.train.backward in reverse order.

Dimensions: B = batch, T = tokens, d = hidden size, V = vocabulary, N = B x (T - 1) tokens scored.
"""
import numpy as np

from ..errors import MinineoError
from ..model.attention import causal_mask
from ..model.embedding import embed, lm_head
from ..model.checks import check_token_ids, named_weights
from ..model.layer_norm import layer_norm
from .backward import block_backward, block_forward, cross_entropy, embed_backward, layer_norm_backward

# Tokens whose logits are made at once: [4096, 50257] float32 logits are 0.8 GB, so the head and the
# loss go a block of rows at a time, in one buffer (512 rows of GPT-2's vocabulary: 103 MB). Each block
# adds its share of wte's gradient, [V, d], to the others': the fewer blocks, the fewer of these sums.
# On a 2-core Xeon (CPU time of one thread, the machine busy): a width of 128, 1,016 rows: 0.50 s with
# blocks of 128 rows, 0.47 with 256, 0.46 with 512, 0.59 in one block; a width of 768, 1,024 rows:
# 2.54, 2.01, 1.91 and 1.70 s.
HEAD_ROWS = 512


def head_and_loss(h, targets, wte, rows=HEAD_ROWS):  # [N, d], [N], [V, d] -> mean loss, d_h [N, d], d_wte [V, d]
    """What backward.py's lm_head, cross_entropy, cross_entropy_backward and lm_head_backward compute, over
    blocks of rows, with the least work on the [rows, V] logits, a step's biggest arrays (on GPT-2's
    vocabulary the head and the loss were 75-87% of a training step). With e = exp(logits - max) and
    s = its sum over V, p = e / s and d_logits = p - onehot(t), so

        d_h   = d_logits @ wte    = (e @ wte) / s  - wte[t]
        d_wte = d_logits.T @ h    = e.T @ (h / s)  - h's rows, each added at its target's row

    e is never divided, and the mean's 1 / N goes there too: they scale [rows, d] arrays, not [rows, V]
    ones. The logits get four passes (max, minus max, exp, sum) in one buffer reused by every block."""
    n, V = len(targets), len(wte)
    total, d_h, d_wte = 0.0, np.empty_like(h), np.empty_like(wte)
    logits = np.empty((min(rows, n), V), np.result_type(h, wte))     # [rows, V], then e, block after block
    partial = np.empty_like(wte) if n > rows else None                # [V, d]: a block's share of d_wte
    for start in range(0, n, rows):
        part = slice(start, start + rows)
        x, t = h[part], targets[part]                                 # [r, d], [r]
        e = np.matmul(x, wte.T, out=logits[:len(t)])                  # [r, V], lm_head
        top = e.max(axis=-1, keepdims=True)                           # [r, 1]: exp cannot overflow
        target = e[np.arange(len(t)), t] - top[:, 0]                  # [r]
        e -= top
        np.exp(e, out=e)
        s = e.sum(axis=-1)                                            # [r]
        total += float((np.log(s) - target).sum(dtype=np.float64))   # -log p(target) = log s - (logit_t - max)
        scale = (1 / (s * n))[:, None]                                # [r, 1]: p = e * s / s, and the mean's 1 / N
        d_h[part] = (e @ wte) * scale - wte[t] / n                    # [r, d]
        np.matmul(e.T, x * scale, out=d_wte if start == 0 else partial)   # [V, d]
        if start:
            d_wte += partial
        np.subtract.at(d_wte, t, x / n)                               # a target seen twice is subtracted twice
    return total / n, d_h, d_wte


def mean_loss(model, ids):  # ids [B, T] -> the loss alone, as loss_and_grads computes it, with no backward
    h = model.forward(check_batch(ids, model.config))[:, :-1]   # [B, T - 1, d]
    targets = ids[:, 1:].reshape(-1)
    h = h.reshape(len(targets), -1)
    return sum(float(cross_entropy(lm_head(h[i:i + HEAD_ROWS], model.params["wte"]), targets[i:i + HEAD_ROWS])[0]
                     .sum(dtype=np.float64)) for i in range(0, len(targets), HEAD_ROWS)) / len(targets)


def layer_masks(config, T):  # -> one [T, T] bool mask per layer: causal, and windowed in a local layer
    positions = np.arange(T)
    return [causal_mask(positions, positions, config.window_size if kind == "local" else None)
            for kind in config.attention_layers]


def loss_and_grads(model, ids):
    """(loss, grads) for a batch ids [B, T] of a model loaded with minineo.load(path, fast=False): loss is
    the mean cross-entropy of predicting ids[:, 1:] from what precedes them (transformers'
    GPTNeoForCausalLM(ids, labels=ids).loss), grads maps each Hub tensor name to its gradient."""
    loss, grads = loss_and_param_grads(model.params, model.config, check_batch(ids, model.config))
    return loss, hub_named(grads)


def loss_and_param_grads(params, config, ids):  # ids [B, T] -> loss, grads nested as params are
    B, T = ids.shape
    eps, n_head = config.layer_norm_epsilon, config.num_heads
    positions = np.broadcast_to(np.arange(T), (B, T))
    x = embed(ids, positions, params["wte"], params["wpe"])   # [B, T, d]
    saved = []
    for layer, mask in zip(params["blocks"], layer_masks(config, T)):
        x, keep = block_forward(x, **layer, n_head=n_head, eps=eps, mask=mask)
        saved.append(keep)
    h = layer_norm(x, **params["ln_f"], eps=eps)
    # Position t predicts token t + 1: the last position has nothing to predict.
    d = h.shape[-1]
    loss, d_h_scored, d_wte_head = head_and_loss(h[:, :-1].reshape(-1, d), ids[:, 1:].reshape(-1), params["wte"])
    d_h = np.zeros_like(h)
    d_h[:, :-1] = d_h_scored.reshape(B, T - 1, d)

    d_x, d_g, d_b = layer_norm_backward(d_h, x, params["ln_f"]["g"], eps)
    block_grads = []
    for layer, keep in zip(reversed(params["blocks"]), reversed(saved)):
        d_x, layer_grads = block_backward(d_x, keep, **layer, n_head=n_head, eps=eps)
        block_grads.append(layer_grads)
    d_wte, d_wpe = embed_backward(d_x, ids, positions, params["wte"], params["wpe"])
    d_wte += d_wte_head   # the tied head's gradient and the embedding's add up
    grads = {"wte": d_wte, "wpe": d_wpe, "blocks": block_grads[::-1], "ln_f": {"g": d_g, "b": d_b}}
    return loss, grads


def check_batch(ids, config):  # -> ids as an integer array [B, T], 2 <= T <= max_position_embeddings
    ids = check_token_ids(ids, config.vocab_size)
    if ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 2:
        raise MinineoError(f"ids: expected an integer array [B, T] with T >= 2 (a token to predict), "
                           f"got shape {list(ids.shape)}")
    if ids.shape[1] > config.max_position_embeddings:
        raise MinineoError(f"ids: {ids.shape[1]} tokens per sequence, more than the model's "
                           f"max_position_embeddings ({config.max_position_embeddings})")
    return ids


def hub_name(name):  # "blocks.3.attn.q_proj.w" -> "transformer.h.3.attn.attention.q_proj.weight"
    parts = name.split(".")
    if parts[0] == "blocks":
        parts[0] = "h"
    if parts[2:3] == ["attn"]:
        parts[2:3] = ["attn", "attention"]
    if parts[-1] in ("w", "g", "b") and len(parts) > 1:
        parts[-1] = "bias" if parts[-1] == "b" else "weight"
    else:   # wte, wpe: the table itself
        parts.append("weight")
    return "transformer." + ".".join(parts)


def hub_named(params):  # a nested dict of arrays, shaped as model.params -> {Hub name: array}, the same arrays
    return {hub_name(name): value for name, value in named_weights(params)}
