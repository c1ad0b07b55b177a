"""minineo.fast.banded computes the model's attention (minineo.model.attention.masked_attention, the
whole masked matrix) a block of queries at a time: the same numbers, for every window, padding and cache."""
import functools
from pathlib import Path

import numpy as np
import pytest

import minineo
from conftest import assert_close, random_ids
from minineo.fast.banded import QUERY_BLOCK, banded_attention
from minineo.model import GPTNeo
from minineo.model.attention import causal_mask, masked_attention

SAME = 1e-5   # the same sums in another order: float32 rounding only


def qkv(B, H, T, S, hd, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, H, T, hd), dtype=np.float32),
            *(rng.standard_normal((B, H, S, hd), dtype=np.float32) for _ in range(2)))


@pytest.mark.parametrize("window", [None, 1, 3, 50, 256, 5000], ids=lambda w: f"window {w}")
@pytest.mark.parametrize("block", [64, QUERY_BLOCK], ids=lambda b: f"block {b}")
def test_banded_equals_masked_attention_on_a_long_left_padded_prompt(window, block):
    B, H, T, hd = 2, 3, 700, 8   # 700 queries: several blocks, the last one partial
    q, k, v = qkv(B, H, T, T, hd)
    idx = np.arange(T)
    real = np.ones((B, T), bool)
    real[1, :37] = False                  # row 1 is left-padded
    real[0] &= idx % 11 != 5              # and row 0 has holes, which a padded cache can hold
    plain = masked_attention(q, k, v, idx, idx, real, window)
    # A query with no key in view (a pad whose window holds only pads) has no meaning; both skip it.
    seen = (causal_mask(idx, idx, window) & real[:, None, :]).any(axis=-1)[:, None, :, None]   # [B, 1, T, 1]
    assert_close(banded_attention(q, k, v, idx, idx, real, window, block=block), plain,
                 f"banded vs masked, window {window}, block {block}", tol=SAME, where=np.broadcast_to(seen, plain.shape))


@pytest.mark.parametrize("window", [None, 1, 40], ids=lambda w: f"window {w}")
def test_banded_equals_masked_attention_with_cached_keys(window):
    # As with a cache: 300 new queries (indices 500..799) against keys 420..799, what a local cache keeps.
    q, k, v = qkv(2, 2, 300, 380, 4, seed=1)
    q_idx, k_idx = np.arange(500, 800), np.arange(420, 800)
    real = np.ones((2, 800), bool)
    real[0, :450] = False
    plain = masked_attention(q, k, v, q_idx, k_idx, real, window)
    assert_close(banded_attention(q, k, v, q_idx, k_idx, real, window, block=64), plain,
                 f"banded vs masked with cached keys, window {window}", tol=SAME)


def models(directory, block):  # the same weights, attention computed the whole way and banded
    plain = minineo.load(directory, fast=False)
    banded = GPTNeo(plain.config, plain.params, plain.tokenizer, attend=functools.partial(banded_attention, block=block))
    return plain, banded


@pytest.mark.parametrize("window", [1, 6, 100], ids=lambda w: f"window {w}")
def test_banded_model_equals_plain_model_padded_and_cached(numpy_checkpoint, window):
    plain, banded = models(numpy_checkpoint(window_size=window, max_position_embeddings=64), block=8)
    ids = random_ids((2, 60))
    mask = np.ones_like(ids)
    mask[1, :9] = 0   # left padding
    full = plain(ids, attention_mask=mask)
    assert_close(banded(ids, attention_mask=mask), full, f"whole prompt, window {window}", tol=SAME, where=mask == 1)
    cache = banded.new_cache(2)   # the same prompt in pieces, through the KV cache
    pieces = [banded(ids[:, :21], attention_mask=mask[:, :21], cache=cache)]
    pieces += [banded(ids[:, 21:50], cache=cache)] + [banded(ids[:, t:t + 1], cache=cache) for t in range(50, 60)]
    assert_close(np.concatenate(pieces, axis=1), full, f"cached, window {window}", tol=SAME, where=mask == 1)


def test_a_fast_load_uses_banded_attention_and_a_plain_one_the_whole_matrix(numpy_checkpoint):
    directory = numpy_checkpoint()
    assert minineo.load(directory).attend is banded_attention
    assert minineo.load(directory, fast=False).attend is masked_attention


def test_the_model_folder_has_no_query_blocks():
    # the textbook scores the whole matrix: the band search lives in minineo/fast/banded.py only
    model = Path(minineo.__file__).parent / "model"
    found = [path.name for path in model.glob("*.py") if "searchsorted" in path.read_text()]
    assert not found, f"searchsorted in minineo/model: {found}"


@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("window", [None, 40], ids=lambda w: f"window {w}")
def test_a_prompts_heads_shared_by_threads_give_the_same_bits(n_threads, window):
    # prompt_attention="heads": the threads take (block of queries, group of heads) in turn; every head
    # is computed as on one thread, so the result is the same to the bit, for 7 heads in groups of 1-2.
    from minineo.fast import choices, threads
    q, k, v = qkv(2, 7, 300, 300, 8, seed=2)
    idx, real = np.arange(300), np.ones((2, 300), bool)
    real[1, :20] = False
    one = banded_attention(q, k, v, idx, idx, real, window, block=64, choices=choices.Choices(prompt_attention="one"))
    threads.set_threads(n_threads)
    try:
        shared = banded_attention(q, k, v, idx, idx, real, window, block=64,
                                  choices=choices.Choices(prompt_attention="heads"))
    finally:
        threads.set_threads(None)
    np.testing.assert_array_equal(shared, one)
