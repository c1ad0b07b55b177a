"""GPT-Neo, the transformer itself: plain NumPy functions on arrays, read top to bottom in this order.

    embedding.py   token + position embeddings, and the tied LM head
    layer_norm.py  layer norm
    linear.py      x @ W.T + b
    attention.py   masked self-attention, global (causal) and local (a sliding window)
    mlp.py         the feed-forward network with gelu_new
    block.py       one pre-norm transformer block
    gpt_neo.py     the forward pass, and GPTNeo, the model object that checks its inputs
    cache.py       the KV cache for generating a token at a time

Nothing here reads files, downloads, starts threads or parses flags: that lives in minineo.weights,
minineo.fast, minineo.text and minineo.commands.
"""
from .gpt_neo import GPTNeo, gpt_neo

__all__ = ["GPTNeo", "gpt_neo"]
