"""minineo.fast.elementwise computes gelu_new's numbers bit for bit: one thread or the threads sharing
the rows, blocks that divide the rows or not, every magnitude of float32; and minineo.load's model
uses it for a prompt (and only there)."""
import numpy as np
import pytest

import minineo
from conftest import every_choice_forced
from minineo.fast import choices, elementwise, threads
from minineo.model.mlp import gelu_new


def values(shape, seed=0):  # every kind of float32 gelu_new meets: large, small, zero, subnormal, negative
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.float32) * np.float32(3)
    flat = x.reshape(-1)
    special = np.array([0, -0.0, 1e-40, -1e-40, 1e-30, -1e-30, 5, -5, 20, -20, 1e4, -1e4, 1e12, -1e12], np.float32)   # (x ** 3 of 1e13 overflows in both)
    flat[:len(special)] = special
    return x


def first_difference(a, b):
    differ = np.argwhere(a != b)
    return f"{len(differ)} values differ, first at {tuple(differ[0])}: {a[tuple(differ[0])]!r} against " \
           f"{b[tuple(differ[0])]!r}" if len(differ) else "equal"


@pytest.mark.parametrize("way", ["one", "rows"])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("shape, block_rows", [((1, 40, 64), 7),      # blocks that do not divide the rows
                                                ((2, 33, 100), 1),     # one row per block
                                                ((128, 3072), None)])  # 125M's MLP, blocks as they come
def test_gelu_in_blocks_is_gelu_new_bit_for_bit(monkeypatch, way, n_threads, shape, block_rows):
    if block_rows:
        monkeypatch.setattr(elementwise, "BLOCK_BYTES", 4 * shape[-1] * block_rows)
    x = values(shape)
    threads.set_threads(n_threads)
    try:
        got = elementwise.gelu_new_rows(x, choices.Choices(prompt_elementwise=way))
    finally:
        threads.set_threads(None)
    expected = gelu_new(x)
    assert got.shape == x.shape and got.dtype == np.float32
    assert np.array_equal(got, expected), first_difference(got, expected)


def test_few_rows_and_other_dtypes_are_gelu_new_itself(monkeypatch):
    # A decode step's few rows are not worth the blocks; float64 (a notebook's) keeps NumPy's own dtype.
    called = []
    monkeypatch.setattr(elementwise, "gelu_new_into", lambda *a: called.append(a))
    for x in (values((1, 1, 3072)), values((31, 64)), values((40, 64)).astype(np.float64)):
        got = elementwise.gelu_new_rows(x)
        assert got.dtype == x.dtype and np.array_equal(got, gelu_new(x))
    assert not called


def test_the_fast_model_takes_the_blocks_for_a_prompt_and_gives_gelu_news_numbers(monkeypatch, tmp_path):
    from conftest import text_checkpoint
    text_checkpoint(tmp_path)
    monkeypatch.setenv(choices.ENV, every_choice_forced(int8_tile_kib=64, prompt_elementwise="rows", int8_prefill_rows=9,
                                                        fp32_threads_from=1, int8_threads_from=1))
    choices.forget()
    blocks = []
    real = elementwise.gelu_new_into
    monkeypatch.setattr(elementwise, "gelu_new_into", lambda x, out: (blocks.append(len(x)), real(x, out)))
    fast = minineo.load(tmp_path)
    ids = np.random.default_rng(0).integers(0, 50257, (1, 40))
    h = fast.forward(ids)
    assert sum(blocks) == 40 * fast.config.num_layers, blocks        # every row of every layer's MLP, once
    blocks.clear()
    fast.forward(ids[:, :1])
    assert not blocks                                                # one token: gelu_new itself
    fast.gelu = None                                                 # the same model with gelu_new
    expected = fast.forward(ids)
    assert not blocks and minineo.load(tmp_path, fast=False).gelu is None
    assert np.array_equal(h, expected), first_difference(h, expected)
    choices.forget()


@pytest.mark.parametrize("way, pieces", [("one", 1), ("rows", 4)])
def test_shared_rows_are_two_pieces_a_thread(monkeypatch, way, pieces):
    # Two pieces a thread, so that a core slowed by another program hands one over; one thread: one piece.
    asked = []
    real = elementwise.parallel_for
    monkeypatch.setattr(elementwise, "parallel_for", lambda n, work, t=None: (asked.append((n, t)), real(n, work, t)))
    threads.set_threads(2)
    try:
        elementwise.gelu_new_rows(values((64, 128)), choices.Choices(prompt_elementwise=way))
    finally:
        threads.set_threads(None)
    assert asked == [(pieces, 2 if way == "rows" else 1)], asked
