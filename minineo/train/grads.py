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
from .backward import (block_backward, block_forward, cross_entropy, cross_entropy_backward, embed_backward,
                       layer_norm_backward, lm_head_backward)

# Tokens whose logits are made at once: [4096, 50257] float32 logits are 0.8 GB, so the head and the
# loss go a block of rows at a time. 128 rows of GPT-2's vocabulary are 25 MB, under the 32 MiB up to
# which minineo.fast.memory keeps freed blocks in the process: the next block reuses them, no page faults.
HEAD_ROWS = 128


def head_and_loss(h, targets, wte, rows=HEAD_ROWS):  # [N, d], [N], [V, d] -> mean loss, d_h [N, d], d_wte [V, d]
    n = len(targets)
    total, d_h, d_wte = 0.0, np.empty_like(h), np.zeros_like(wte)
    for start in range(0, n, rows):
        part = slice(start, start + rows)
        losses, probs = cross_entropy(lm_head(h[part], wte), targets[part])
        total += float(losses.sum(dtype=np.float64))
        d_h[part], d_w = lm_head_backward(cross_entropy_backward(probs, targets[part]), h[part], wte)
        d_wte += d_w
    # The loss is a mean: its gradient is the summed losses' over n, divided here on the small arrays.
    d_h /= n
    d_wte /= n
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
