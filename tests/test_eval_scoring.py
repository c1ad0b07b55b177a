"""minineo/text/scoring.py on its own (no lm-eval, no torch): shared prefixes run once from the KV cache,
batched, give what one plain forward pass per request gives."""
import numpy as np
import pytest

import minineo
from minineo.text.scoring import generate_greedy, plan, score, split

from conftest import random_ids


def by_hand(model, context, continuation, max_length):  # one request, one plain forward pass
    ids = (context + continuation)[-(max_length + 1):]
    logits = model(np.array(ids[:-1])).astype(np.float64)[-len(continuation):]   # [n, V]
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    ll = sum(logp[i, t] for i, t in enumerate(continuation))
    return ll, bool((logits.argmax(-1) == continuation).all())


def test_split_and_plan():
    assert split([1, 2, 3], [4, 5], 10) == ((1, 2, 3), (4,))
    assert split([1, 2, 3], [4, 5], 3) == ((2, 3), (4,))          # too long: cut from the left, as HFLM
    requests = [([1, 2], [3]), ([1, 2], [4, 5]), ([9], [8, 7, 6]), ([1, 2], [5])]
    batches = plan(requests, 16, batch_size=8)
    assert len(batches) == 1
    groups = dict(batches[0])
    assert sorted(i for i, _, _ in groups[(1, 2)]) == [0, 1, 3] and [i for i, _, _ in groups[(9,)]] == [2]
    assert [len(b) for b in plan(requests, 16, batch_size=1)] == [1, 1]
    # two long windows: more padded tokens together than BATCH_TOKENS, so a batch each
    windows = [([1], list(range(2, 1200))), ([2], list(range(3, 1200)))]
    assert len(plan(windows, 2048, batch_size=8)) == 2 and len(plan(windows[:1] * 2, 2048, 8)) == 1


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_shared_prefixes_and_batches_equal_one_pass_per_request(numpy_checkpoint, batch_size):
    model = minineo.load(numpy_checkpoint(seed=2, max_position_embeddings=24, window_size=4))   # V = 300
    rng = np.random.default_rng(0)
    contexts = [list(random_ids(n, seed=s)) for s, n in enumerate([5, 9, 1, 20, 14])]
    requests = [(c, list(rng.integers(0, 300, k))) for c in contexts for k in (1, 3, 6)]   # 20 + 6 > 24: cut
    requests.append((contexts[0], list(random_ids(24, seed=9))))                         # a whole window scored
    # a greedy continuation, so that `greedy` is true once
    greedy = [int(model(np.array(contexts[1]))[-1].argmax())]
    requests.append((contexts[1], greedy))
    ours = score(model, requests, batch_size=batch_size)
    worst = 0.0
    for (context, continuation), (ll, g) in zip(requests, ours):
        expected, expected_greedy = by_hand(model, context, continuation, 24)
        worst = max(worst, abs(ll - expected) / abs(expected))
        assert g == expected_greedy
    print(f"batch size {batch_size}: {len(requests)} requests in {len(plan(requests, 24, batch_size))} batches, "
          f"largest relative difference {worst:.2g}")
    assert worst < 1e-5 and ours[-1][1] is True


def test_greedy_generation_stops_at_a_stop_string_or_max_new(bundled_text_model):
    model = bundled_text_model
    ids = model.tokenizer.encode("KING. What say you, my lord?")
    free = generate_greedy(model, ids, 12, [], None)
    assert len(free) == 12
    text = model.tokenizer.decode(free)
    stop = text[len(text) // 2: len(text) // 2 + 1]
    cut = generate_greedy(model, ids, 12, [stop], None)
    print(f"free {text!r}; stop {stop!r} -> {model.tokenizer.decode(cut)!r}")
    assert cut == free[:len(cut)] and stop in model.tokenizer.decode(cut) and \
        stop not in model.tokenizer.decode(cut[:-1])
    assert generate_greedy(model, ids, 12, [], free[2]) == free[:3]   # the eos token ends it too


@pytest.fixture(scope="module")
def bundled_text_model():
    return minineo.load()
