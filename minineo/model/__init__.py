"""GPT-Neo, the transformer itself: plain NumPy functions on arrays, read top to bottom in this order.

    config.py      the model's shape (Config) and the released sizes
    embedding.py   token + position embeddings, and the tied LM head
    layer_norm.py  layer norm
    linear.py      x @ W.T + b
    attention.py   masked self-attention, global (causal) and local (a sliding window)
    mlp.py         the feed-forward network with gelu_new
    block.py       one pre-norm transformer block, and Layer: its settings for one call
    gpt_neo.py     the forward pass, and GPTNeo, the model object
    cache.py       the KV cache for generating a token at a time

Beside them: checks.py, what GPTNeo checks of its inputs; hooks.py, the named activations
(TransformerLens's names) that a reader can skip: with no hook attached, each hook point is x itself.

Nothing here reads files, downloads, starts threads or parses flags: that lives in minineo.weights,
minineo.fast, minineo.text and minineo.commands.
"""
from .gpt_neo import GPTNeo, gpt_neo

__all__ = ["GPTNeo", "gpt_neo"]
