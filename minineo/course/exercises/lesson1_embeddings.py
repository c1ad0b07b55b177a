"""Lesson 1: tokens in, logits out: embeddings and the tied LM head."""
import numpy as np

from ...model.attention import softmax
from ...model.embedding import embed, lm_head
from .base import Case, Exercise, Mistake, rand, strided


def embed_cases():
    V, P, d = 13, 16, 6
    wte, wpe = rand(1, V, d), rand(2, P, d)
    ids = np.random.default_rng(3).integers(0, V, (2, 5))
    padded = np.array([[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]])
    return [
        Case("batch of 2, 5 tokens at positions 0..4", lambda: ((ids, np.tile(np.arange(5), (2, 1)), wte, wpe), {})),
        Case("positions 7..11: 7 tokens came before (a KV cache), so positions do not start at 0",
             lambda: ((ids, np.tile(np.arange(7, 12), (2, 1)), wte, wpe), {})),
        Case("left padding: row 0 has 2 pads (at position 1), its tokens at 0, 1, 2", lambda: ((ids, padded, wte, wpe), {})),
        Case("non-contiguous wte and wpe", lambda: ((ids, np.tile(np.arange(3, 8), (2, 1)), strided(wte), strided(wpe)), {})),
    ]


EMBED = Exercise("embed", 1, embed, embed_cases, [
    Mistake("ignores `positions` and uses 0..T-1", "look the positions up as given: wpe[positions] "
            "(after a cache they continue from the tokens before; with left padding they skip the pads)",
            lambda ids, positions, wte, wpe: wte[ids] + wpe[np.arange(ids.shape[-1])]),
    Mistake("looks the position embedding up with the token ids (wpe[ids])", "wpe[positions]",
            lambda ids, positions, wte, wpe: wte[ids] + wpe[ids]),
    Mistake("leaves out the position embedding", "add wpe[positions] to wte[ids]",
            lambda ids, positions, wte, wpe: wte[ids]),
])


def lm_head_cases():
    V, d = 11, 6
    wte = rand(4, V, d)
    return [
        Case("batch of 2, 3 tokens, d 6, vocabulary 11", lambda: ((rand(5, 2, 3, d), wte), {})),
        Case("one vector h [d]", lambda: ((rand(6, d), wte), {})),
        Case("large h (values around 100) and non-contiguous wte", lambda: ((rand(7, 4, d, scale=100), strided(wte)), {})),
    ]


LM_HEAD = Exercise("lm_head", 1, lm_head, lm_head_cases, [
    Mistake("returns probabilities (a softmax of the logits)", "return the logits h @ wte.T; the softmax comes later, "
            "in sampling or in the loss", lambda h, wte: softmax(h @ wte.T)),
    Mistake("returns log-probabilities (a log-softmax)", "return the logits h @ wte.T",
            lambda h, wte: (lambda z: z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
                            - z.max(-1, keepdims=True))(h @ wte.T)),
])
