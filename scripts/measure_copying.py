"""Measure what minineo/data/neo-copying's MODEL_CARD.md reports: how well the model copies a span of random
tokens it has seen once, within and beyond its local window, and which layer does it (each ablated in turn).

    python scripts/measure_copying.py                 # minineo; and transformers on the same files if installed

The copying figure (issue 23): spans of P random tokens of the vocabulary the model knows (the tokens of its
training data: those whose embedding row is not zero, <|endoftext|> excepted), P = max(8, min(48, window // 2)),
each sequence `<|endoftext|> span span`; the mean loss on the second copy against the first. tests/
test_copying_model.py asserts it from these functions.
"""
import copy
import sys

import numpy as np

import minineo
from minineo.text.sliding_window import token_nll

MODEL = "neo-copying"
N_SEQUENCES = 32
SEED = 0


def copying_period(window):
    return max(8, min(48, window // 2))


def known_tokens(model):  # [K]: the tokens of the training text (their rows are not zero), <|endoftext|> excepted
    wte = np.asarray(model.params["wte"])
    known = np.flatnonzero(np.linalg.norm(wte, axis=1) > 0)
    return known[known != model.config.eos_token_id]


def copy_sequences(model, period, n=N_SEQUENCES, seed=SEED):  # -> [n, 1 + 2 * period]: <|endoftext|> span span
    rng = np.random.default_rng([seed, period])
    spans = rng.choice(known_tokens(model), size=(n, period))
    eot = np.full((n, 1), model.config.eos_token_id)
    return np.concatenate([eot, spans, spans], axis=1)


def position_losses(logits, seqs):  # [n, T, V], [n, T] -> [n, T - 1]: nats for each token after the first
    return np.stack([token_nll(z[:-1], s[1:]) for z, s in zip(logits, seqs)])


def first_and_second(losses, period):  # [n, 2P] -> mean nats on the first copy's P tokens, on the second's
    return losses[:, :period].mean(), losses[:, period:].mean()


def without_attention(model, layer):
    """The model with `layer`'s attention output zeroed (its out_proj weight and bias): that layer's attention
    adds nothing to the residual stream. Its MLP and every other layer are untouched."""
    params = copy.copy(model.params)
    params["blocks"] = list(params["blocks"])
    block = params["blocks"][layer] = dict(params["blocks"][layer])
    block["attn"] = dict(block["attn"])
    block["attn"]["out_proj"] = {k: np.zeros_like(np.asarray(v)) for k, v in block["attn"]["out_proj"].items()}
    return minineo.GPTNeo(model.config, params, model.tokenizer)


def copying_table(model):
    """{(period, ablated layer or None): (first, second)} for the figure's period and one of 2 * window."""
    window = model.config.window_size
    table = {}
    for period in (copying_period(window), 2 * window):
        seqs = copy_sequences(model, period)
        for layer in [None, *range(model.config.num_layers)]:
            m = model if layer is None else without_attention(model, layer)
            table[period, layer] = first_and_second(position_losses(m(seqs), seqs), period)
    return table


def transformers_losses(directory, seqs):  # the same per-token losses, from transformers on the same files
    import torch
    from transformers import GPTNeoForCausalLM
    model = GPTNeoForCausalLM.from_pretrained(directory, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(seqs)).logits.numpy()
    return position_losses(logits, seqs)


def main():
    model = minineo.load(MODEL, fast=False)
    config = model.config
    print(f"{model.source}: layers {config.attention_layers}, window {config.window_size}, "
          f"{len(known_tokens(model))} known tokens; {N_SEQUENCES} sequences per period, seed {SEED}")
    for (period, layer), (first, second) in copying_table(model).items():
        where = "within" if period <= config.window_size else "beyond"
        what = "as trained" if layer is None else f"layer {layer} ({config.attention_layers[layer]}) attention off"
        print(f"P {period:2d} ({where} the window)  {what:>32}: first copy {first:5.2f}, second {second:5.2f} "
              f"nats/token ({first - second:+.2f} lower)")
    period = copying_period(config.window_size)
    seqs = copy_sequences(model, period)
    ours = position_losses(model(seqs), seqs)
    try:
        theirs = transformers_losses(model.source, seqs)
    except ImportError:
        sys.exit("transformers is not installed: minineo's figures only")
    first, second = first_and_second(theirs, period)
    print(f"transformers, P {period}: first copy {first:.4f}, second {second:.4f}; max |difference| per token "
          f"from minineo {np.abs(ours - theirs).max():.1e}")


if __name__ == "__main__":
    main()
