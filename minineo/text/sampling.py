"""Next-token selection for `generate`: logits processors, warpers, greedy and sampling.

Each processor and warper is a NumPy port of one Hugging Face transformers class (5.24,
`transformers/generation/logits_process.py`) and gives the same filtered logits.
Logits stay float32, as transformers casts the model's last-position logits to
float32 before processing them.
"""

import numpy as np

from ..errors import MinineoError
from ..model.attention import softmax
from .settings import (DEFAULT_MIN_NEW_TOKENS, DEFAULT_REPETITION_PENALTY, DEFAULT_TEMPERATURE, DEFAULT_TOP_K,
                       DEFAULT_TOP_P)

def apply_repetition_penalty(logits, previous_ids, penalty, attention_mask=None):
    # [B, V], [B, T] ids, optional [B, T] bool -> [B, V]
    # RepetitionPenaltyLogitsProcessor: every distinct id in the sequence so far (prompt
    # included) is penalised once, however often it occurs.  Positions where attention_mask
    # is False (padding) do not count.  transformers 5.24 `generate` does the same for left
    # padding: it passes the number of leading masked positions as `prompt_ignore_length`
    # (generation/utils.py, _get_logits_processor).  It only skips *leading* pads, so the two
    # differ only for masks with holes or right padding, which decoder-only generate never has.
    previous_ids = np.asarray(previous_ids)
    batch = np.arange(logits.shape[0])[:, None]
    counted = np.ones(previous_ids.shape, dtype=bool) if attention_mask is None else np.asarray(attention_mask, bool)
    seen = np.zeros(logits.shape, dtype=bool)
    seen[np.broadcast_to(batch, previous_ids.shape)[counted], previous_ids[counted]] = True
    # float32 penalty so a NumPy float64 scalar cannot promote the logits to float64
    penalty = np.float32(penalty)
    # a penalty > 1 must lower the probability whatever the sign, hence * for negatives and / for positives
    penalised = np.where(logits < 0, logits * penalty, logits / penalty)
    return np.where(seen, penalised, logits)


def apply_min_length(logits, eos_token_id, length, min_length):
    # [B, V] -> [B, V]
    # MinNewTokensLengthLogitsProcessor when `length` counts new tokens and `min_length` is
    # min_new_tokens; MinLengthLogitsProcessor when both include the (padded) prompt.
    # eos_token_id may be one id or a list of ids, as in transformers.
    if length >= min_length:
        return logits
    suppressed = logits.copy()
    suppressed[:, eos_token_id] = -np.inf
    return suppressed


def apply_temperature(logits, temperature):
    # [B, V] -> [B, V]
    # TemperatureLogitsWarper; float32 temperature keeps the logits float32
    return logits / np.float32(temperature)


def top_k_filter(logits, k):
    # [B, V] -> [B, V]
    # TopKLogitsWarper: keep every logit >= the k-th largest, so ties with it survive and
    # more than k tokens may remain; k = 0 disables it, k > V keeps everything.
    if k == 0:
        return logits
    vocab = logits.shape[-1]
    k = min(k, vocab)
    kth_largest = np.partition(logits, vocab - k, axis=-1)[:, vocab - k, None]
    return np.where(logits < kth_largest, -np.inf, logits)


def top_p_filter(logits, top_p):
    # [B, V] -> [B, V]
    # TopPLogitsWarper: walking up from the least likely token, drop tokens while the
    # cumulative probability stays <= 1 - top_p; the most likely token always survives.
    # generate skips the warper at top_p = 1, and so do we (it would only drop underflowed tokens).
    if top_p >= 1.0:
        return logits
    # Ascending order with tied logits in descending id order: a tie straddling the cut keeps
    # the lowest ids, so a tiny top_p keeps exactly the token greedy argmax picks.  (torch's
    # unstable sort orders ties arbitrarily; only there can the two differ.)
    order = np.argsort(-logits, axis=-1, kind="stable")[:, ::-1]
    probs = softmax(np.take_along_axis(logits, order, axis=-1))
    # torch's CPU cumsum accumulates float32 in float64; doing the same reproduces its cut exactly
    cumulative = np.cumsum(probs, axis=-1, dtype=np.float64).astype(np.float32)
    drop_sorted = cumulative <= np.float32(1.0 - top_p)
    drop_sorted[:, -1] = False
    drop = np.empty_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=-1)
    return np.where(drop, -np.inf, logits)


def process_logits(
    logits,
    previous_ids,
    *,
    num_new_tokens=0,
    eos_token_id=None,
    attention_mask=None,
    do_sample=False,
    temperature=DEFAULT_TEMPERATURE,
    top_k=DEFAULT_TOP_K,
    top_p=DEFAULT_TOP_P,
    repetition_penalty=DEFAULT_REPETITION_PENALTY,
    min_new_tokens=DEFAULT_MIN_NEW_TOKENS,
):
    # [B, V], [B, T] -> [B, V]
    # Same order as transformers' GenerationMixin._get_logits_processor: processors first
    # (repetition penalty, then min-new-tokens), then, only when sampling, the warpers
    # temperature -> top-k -> top-p.  Each step is skipped under the same condition as there.
    logits = np.asarray(logits, dtype=np.float32)
    if repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, previous_ids, repetition_penalty, attention_mask)
    if eos_token_id is not None and min_new_tokens > 0:
        logits = apply_min_length(logits, eos_token_id, num_new_tokens, min_new_tokens)
    if not do_sample:
        return logits
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    logits = top_k_filter(logits, top_k)
    return top_p_filter(logits, top_p)


def greedy(logits):
    # [B, V] -> [B]
    # ties go to the lowest id, as with torch.argmax
    return np.argmax(logits, axis=-1)


def sample(logits, rng):
    # [B, V] -> [B]
    if rng is None:
        raise MinineoError("sampling (do_sample=True) needs a numpy.random.Generator, got rng=None")
    # Inverse-CDF draw, one uniform per row, so a seeded Generator reproduces the tokens.
    # float64 here only: a float32 running sum over 50k tokens drifts visibly.
    weights = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    cdf = np.cumsum(weights, axis=-1)
    # u in (0, 1] with a strict '<' count picks the first token whose cdf reaches u * total,
    # which always has nonzero weight, so a filtered (-inf) token can never be drawn
    target = (1.0 - rng.random(logits.shape[0])) * cdf[:, -1]
    return (cdf < target[:, None]).sum(axis=-1)


def next_token(logits, previous_ids, rng=None, **settings):
    # [B, V], [B, T] -> [B]
    # settings: the keyword arguments of process_logits; do_sample=False is greedy and needs no rng
    processed = process_logits(logits, previous_ids, **settings)
    return sample(processed, rng) if settings.get("do_sample") else greedy(processed)
