"""Perplexity of a text, by the sliding-window method of Hugging Face's perplexity guide.

A model sees at most `context` tokens, so a long text is cut into windows that start every `stride`
tokens. Each token but the first is scored once, by the first window that reaches it, with the
tokens before it in that window as its context:

    tokens     t0 t1 t2 t3 t4 t5 t6 t7 t8 t9        context = 6, stride = 3
    window 0   [t0 t1 t2 t3 t4 t5]                 scores t1..t5 (nothing comes before t0)
    window 1            [t3 t4 t5 t6 t7 t8]        scores t6..t8; t3..t5 are context only
    window 2                     [t6 t7 t8 t9]     scores t9, and reaches the end: stop

    perplexity = exp(total negative log-likelihood / tokens scored)

A smaller stride gives each token more context (usually a lower perplexity) for more windows (more compute).
stride = context cuts the text into disjoint windows; then a window's first token has nothing before
it and is not scored, as in the guide. The text is not prefixed with <|endoftext|> (the guide does
not), so its first token is never scored; put eos_token_id in front of the ids to score it.

Windows run one at a time: a window's matmuls are already T rows tall. Stacking equal windows into
a [B, T] batch measured 10-25% slower for the 125M shape at T = 256 and 512 (2 cores), and faster
only for windows of about 64 tokens, which no real evaluation uses.

Dimensions: T = tokens in a window, n = tokens it scores, d = hidden size, V = vocabulary.
"""
import math
from dataclasses import dataclass

import numpy as np

from ..errors import MinineoError, is_int
from ..model.checks import check_token_ids, id_array

# Rows of logits made at once: the LM head's [rows, V] output is 51 MB at V = 50257, not 400 MB for
# a 2048-token window.
LOGIT_ROWS = 256


@dataclass(frozen=True)
class Score:
    nll: float     # total negative log-likelihood of the scored tokens, in nats
    tokens: int    # tokens scored
    windows: int   # windows run
    context: int   # the window and stride used
    stride: int

    @property
    def perplexity(self):
        return math.exp(self.nll / self.tokens)


def windows(n_tokens, context, stride):  # -> [(begin, end, first)]: ids[begin:end] scores ids[first:end]
    spans, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        first = max(prev_end, begin + 1)   # tokens before prev_end were scored by an earlier window
        if first < end:                    # a last disjoint window of one token scores nothing
            spans.append((begin, end, first))
        prev_end = end
        if end == n_tokens:
            break
    return spans


def token_nll(logits, targets):  # [n, V] float32, [n] -> [n] float64: -log softmax(logits)[target]
    # log softmax(x)[t] = x[t] - log sum exp(x); subtracting each row's max first keeps exp() from
    # overflowing and changes nothing else.
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=-1, dtype=np.float64))
    return log_z - shifted[np.arange(len(targets)), targets]


def window_nll(model, ids, begin, end, first):  # -> float: the total over ids[first:end]
    # Position i predicts token i + 1, so the window's last token is only a target, never an input.
    h = model.forward(ids[begin:end - 1])[first - 1 - begin:]   # [T - 1, d] -> [n, d]
    targets = ids[first:end]                                      # [n]
    # Logits only for the scored positions: the LM head (d x V) costs more than a block per token.
    return sum(float(token_nll(model.logits(h[i:i + LOGIT_ROWS]), targets[i:i + LOGIT_ROWS]).sum())
               for i in range(0, len(targets), LOGIT_ROWS))


def score_tokens(model, ids, context=None, stride=None, progress=None):
    """Score token ids with sliding windows -> Score(nll, tokens, windows, context, stride).
    context defaults to the model's max_position_embeddings (2048 for the released models), stride
    to context // 4 (512). progress(windows_done, windows_total) is called after each window."""
    ids = id_array(ids)
    context, stride = _check(model, ids, context, stride)
    spans = windows(len(ids), context, stride)
    nll = 0.0   # a Python float: the sum runs in float64
    for done, (begin, end, first) in enumerate(spans, 1):
        window = window_nll(model, ids, begin, end, first)
        # A NaN or inf would make the perplexity nan (or 0, or inf) with no trace of where it came from.
        model.check_finite(window, where=f"window {done} of {len(spans)} (tokens {begin}..{end - 1}): ")
        nll += window
        if progress is not None:
            progress(done, len(spans))
    return Score(nll, sum(end - first for _, end, first in spans), len(spans), context, stride)


def text_perplexity(model, text, context=None, stride=None):
    """exp(mean negative log-likelihood per token) of text, a float; score_tokens gives the details."""
    if not isinstance(text, str):
        raise MinineoError(f"text must be a str, got {type(text).__name__}")
    return score_tokens(model, model.tokenizer.encode(text), context, stride).perplexity


def _check(model, ids, context, stride):  # -> context, stride with their defaults, or MinineoError
    limit = model.config.max_position_embeddings
    context = limit if context is None else context
    if not is_int(context) or not 2 <= context <= limit:
        raise MinineoError(f"context must be an integer from 2 (one token of context, one scored) to the "
                           f"model's max_position_embeddings ({limit}), got {context!r}")
    stride = max(1, context // 4) if stride is None else stride
    if not is_int(stride) or not 1 <= stride <= context:
        raise MinineoError(f"stride must be an integer from 1 to the context ({context}), got {stride!r}")
    check_token_ids(ids, model.config.vocab_size)
    if ids.ndim != 1:
        raise MinineoError(f"ids: expected a 1-D list of token ids, got shape {list(ids.shape)}")
    if len(ids) < 2:
        raise MinineoError(f"the text is {len(ids)} token{'s' * (len(ids) != 1)} long; perplexity needs "
                           "at least 2 (the first token is only context)")
    return int(context), int(stride)

