"""Log-likelihoods of continuations, as lm-eval's HFLM computes them, with each shared context run once.

A request is a pair of token lists, (context, continuation). As HFLM._loglikelihood_tokens: the
model reads (context + continuation)[-(L + 1):][:-1] (L = the model's context; a longer pair loses
tokens from the left), and the request's answer is

    loglikelihood = sum of log softmax(logits)[token] over the continuation's tokens (<= 0)
    greedy        = whether every continuation token is the argmax at its position

The positions that predict the continuation are the last context token's and the continuation's
own but its last one. So what the model reads splits in two:

    context + continuation     c0 c1 c2 c3 | x0 x1 x2
    prefix (read, 1 row used)  c0 c1 c2 c3             the last row predicts x0
    suffix (read from cache)                x0 x1       they predict x1 x2

Multiple-choice tasks ask for the same context with several endings (HellaSwag: 4, PIQA: 2,
Winogrande: the other way round, but the same prefix often recurs). Requests with the same prefix
form a group: the prefix is run once, its keys and values kept (the KV cache), and the endings'
suffixes are run from that cache, all of a group's endings as one batch. HFLM runs every request
whole, so it computes each context as many times as it has endings.

Batches: groups sorted by length, longest first (as lm-eval does), up to `batch_size` groups and
BATCH_TOKENS padded tokens at a time. Prefixes are left-padded, so that every ending follows its
prefix's last real token directly (a local attention layer counts its window in sequence indices);
suffixes are right-padded (padding after a token cannot change it). Which groups share a batch is
fixed by the requests alone (plan()), so a batch gives the same floats on any machine that computes
as this one does: what minineo/text/distributed.py relies on.

Dimensions: G = groups in a batch, R = endings in it, P / S = padded prefix / suffix length,
d = hidden size, V = vocabulary, n = scored positions.
"""
import numpy as np

from .sliding_window import LOGIT_ROWS, token_nll

# Padded tokens per batch, prefixes and suffixes together (a longer group runs alone): the activations
# and a global layer's [rows, heads, T, T] scores stay small, and a batch of long windows would gain
# nothing (minineo/text/perplexity.py measured stacked 256-token windows 10-25% slower).
BATCH_TOKENS = 2048


def split(context, continuation, max_length):  # -> (prefix, suffix) token tuples: what the model reads
    ids = (list(context) + list(continuation))[-(max_length + 1):][:-1]
    n = len(ids) - len(continuation) + 1      # up to and including the position that predicts continuation[0]
    return tuple(ids[:n]), tuple(ids[n:])


def plan(requests, max_length, batch_size):
    """[(context ids, continuation ids)] -> batches: [[(prefix, [(request index, suffix, continuation)])]].
    Requests with the same prefix share a group; groups are ordered longest first, then cut into batches."""
    groups = {}
    for i, (context, continuation) in enumerate(requests):
        prefix, suffix = split(context, continuation, max_length)
        groups.setdefault(prefix, []).append((i, suffix, tuple(continuation)))
    ordered = sorted(groups.items(), key=lambda g: (-len(g[0]) - max(len(s) for _, s, _ in g[1]), g[0]))
    batches, batch = [], []
    for group in ordered:
        with_it = batch + [group]   # the padded prefix and suffix lengths if it joins: together within the model's
        P = max(len(prefix) for prefix, _ in with_it)
        S = max(len(suffix) for _, endings in with_it for _, suffix, _ in endings)
        tokens = len(with_it) * P + sum(len(endings) for _, endings in with_it) * S   # padded, both passes
        if batch and (len(batch) == batch_size or tokens > BATCH_TOKENS or P + S > max_length):
            batches.append(batch)
            batch = []
        batch.append(group)
    return batches + [batch] * bool(batch)


def select_rows(cache, rows):  # a Cache of B sequences -> one whose row r is the old row rows[r]
    for layer in cache.layers:
        layer.k, layer.v = layer.k[rows], layer.v[rows]
    cache.real = cache.real[rows]
    return cache


def score_batch(model, batch):
    """One batch of plan() -> [(request index, loglikelihood, greedy)]."""
    prefixes = [prefix for prefix, _ in batch]
    P = max(map(len, prefixes))
    ids = np.zeros((len(batch), P), np.int64)
    mask = np.zeros((len(batch), P), np.int64)
    for g, prefix in enumerate(prefixes):               # left-padded
        ids[g, P - len(prefix):], mask[g, P - len(prefix):] = prefix, 1
    endings = [(g, *ending) for g, (_, group) in enumerate(batch) for ending in group]
    longest = max(len(suffix) for _, _, suffix, _ in endings)
    cache = model.new_cache(len(batch)) if longest else None
    h_last = model.forward(ids, attention_mask=mask, cache=cache)[:, -1]     # [G, P, d] -> [G, d]
    rows = [[h_last[g]] for g, *_ in endings]            # per ending: the hidden states that predict it
    if longest:
        select_rows(cache, np.array([g for g, *_ in endings]))
        ids = np.zeros((len(endings), longest), np.int64)
        mask = np.zeros((len(endings), longest), np.int64)
        for r, (_, _, suffix, _) in enumerate(endings):  # right-padded
            ids[r, :len(suffix)], mask[r, :len(suffix)] = suffix, 1
        h = model.forward(ids, attention_mask=mask, cache=cache)              # [R, S, d]
        for r, (_, _, suffix, _) in enumerate(endings):
            rows[r].extend(h[r, :len(suffix)])
    hidden = np.stack([row for ending in rows for row in ending])            # [n, d]
    targets = np.concatenate([continuation for *_, continuation in endings])  # [n]
    nll, hit = np.empty(len(targets)), np.empty(len(targets), bool)
    for i in range(0, len(targets), LOGIT_ROWS):        # logits only for scored rows, LOGIT_ROWS at a time
        logits = model.logits(hidden[i:i + LOGIT_ROWS])                       # [rows, V]
        nll[i:i + LOGIT_ROWS] = token_nll(logits, targets[i:i + LOGIT_ROWS])
        hit[i:i + LOGIT_ROWS] = logits.argmax(axis=-1) == targets[i:i + LOGIT_ROWS]
    results, start = [], 0
    for _, index, _, continuation in endings:
        end = start + len(continuation)
        results.append((index, -float(nll[start:end].sum()), bool(hit[start:end].all())))
        start = end
    return results


def score(model, requests, batch_size=8, max_length=None, run=None):
    """[(context ids, continuation ids)] -> [(loglikelihood, greedy)] in the same order.
    run(batches) -> [results of score_batch] replaces running the batches here (Ray does that)."""
    max_length = max_length or model.config.max_position_embeddings
    batches = plan(requests, max_length, batch_size)
    done = run(batches) if run is not None else [score_batch(model, batch) for batch in batches]
    results = [None] * len(requests)
    for batch in done:
        for index, loglikelihood, greedy in batch:
            results[index] = (loglikelihood, greedy)
    return results


def generate_greedy(model, ids, max_new, stop, eos_token_id):
    """Greedy tokens after ids (at most max_new), ending at eos or once the decoded text holds a stop string,
    as HFLM.generate_until does with transformers' greedy generate and lm-eval's stop criteria."""
    cache = model.new_cache(1)
    h = model.forward(np.asarray(ids, np.int64), cache=cache)[-1]          # [T, d] -> [d]
    new = []
    while len(new) < max_new:
        token = int(model.check_finite(model.logits(h)).argmax())
        new.append(token)
        if token == eos_token_id or any(s in model.tokenizer.decode(new) for s in stop if s):
            break
        h = model.forward(np.array([token]), cache=cache)[-1]
    return new
