"""int8 weights: quantization error, the tiled x @ W.T against the dequantized matrix, thread control."""
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from conftest import every_choice_forced
from minineo.errors import MinineoError
from minineo.fast import choices, int8, threads
from minineo.fast.int8 import Int8Weight, quantize


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def n_threads(request):
    threads.set_threads(request.param)
    yield request.param
    threads.set_threads(None)


def force(monkeypatch, int8_tile_kib, cast, prefill_rows=256):
    # Every choice forced, so the tests never wait for a measurement; every product split, however small.
    monkeypatch.setenv(choices.ENV, every_choice_forced(
        decode="tiles", prefill="tiles", int8_tile_kib=int8_tile_kib, int8_cast=cast, int8_prefill_cast=cast,
        fp32_threads_from=1, int8_threads_from=1, int8_prefill_rows=prefill_rows, prompt_attention="heads",
        prompt_elementwise="rows"))
    choices.forget()


@pytest.fixture(autouse=True, params=["direct", "int16"], ids=lambda cast: f"cast {cast}")
def default_tiles(request, monkeypatch):
    force(monkeypatch, choices.Choices().int8_tile_kib, request.param)
    yield request.param
    choices.forget()


@pytest.fixture
def small_tiles(monkeypatch, default_tiles):
    # Tiny tiles, so that even small test matrices span many tiles with a ragged last one.
    force(monkeypatch, 1, default_tiles, prefill_rows=5)                                # 1 KiB: 7 rows when in = 33


def random_weight(n_out, n_in, seed=0):
    return np.random.default_rng(seed).standard_normal((n_out, n_in), dtype=np.float32) * np.float32(0.02)


def assert_matches(got, want, what):
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    maxdiff = float(np.abs(got - want).max()) if got.size else 0.0
    print(f"{what}: maxdiff {maxdiff:.3g}")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max(initial=1.0)),
                               err_msg=f"{what}: maxdiff {maxdiff:.3g}")


def test_round_trip_error_is_at_most_half_a_step():
    w = random_weight(64, 100)
    w[3, 7] = 5.0  # an outlier makes its row's step coarse, and only its row's
    qw = quantize(w)
    assert qw.q.dtype == np.int8 and qw.scale.dtype == np.float32
    assert qw.q.shape == (64, 100) and qw.scale.shape == (64,)
    np.testing.assert_array_equal(np.abs(qw.q).max(axis=1), 127)  # each row uses the full range
    error = np.abs(qw.dequantize() - w)
    bound = 0.5 * qw.scale[:, None] * (1 + 1e-5)
    assert np.all(error <= bound), f"worst error / scale: {(error / qw.scale[:, None]).max():.4f}"


def test_zero_row_quantizes_without_dividing_by_zero():
    w = random_weight(6, 10)
    w[2] = 0.0
    with np.errstate(all="raise"):
        qw = quantize(w)
    assert qw.scale[2] == 0 and not qw.q[2].any()
    np.testing.assert_array_equal(qw.dequantize()[2], 0.0)
    y = qw.matmul_t(np.ones((3, 10), dtype=np.float32))
    np.testing.assert_array_equal(y[:, 2], 0.0)


def test_shape_and_nbytes():
    qw = quantize(random_weight(12, 34))
    assert qw.shape == (12, 34)
    assert qw.nbytes == 12 * 34 + 12 * 4


@pytest.mark.parametrize("x_shape, n_out", [
    ((33,), 50),         # one vector
    ((1, 33), 50),       # decode, one token
    ((4, 1, 33), 50),    # decode, a batch of 4 sequences
    ((3, 33), 49),       # a few rows: still the decode tiles
    ((37, 33), 50),      # prefill: 37 rows, 50 outputs, neither a multiple of the tile
    ((2, 40, 33), 7),    # prefill of a batch; out smaller than two tiles
    ((5, 33), 1),        # a single output row
])
def test_matmul_t_matches_dequantized_matmul(n_threads, small_tiles, x_shape, n_out):
    qw = quantize(random_weight(n_out, 33))
    x = np.random.default_rng(1).standard_normal(x_shape, dtype=np.float32)
    assert_matches(qw.matmul_t(x), x @ qw.dequantize().T, f"x {x_shape} @ W.T, W ({n_out}, 33)")


@pytest.mark.parametrize("m", [1, 3, 130])
def test_matmul_t_with_default_tiles(n_threads, m):
    qw = quantize(random_weight(1001, 517))  # odd sizes, many tiles of the real size
    x = np.random.default_rng(2).standard_normal((m, 517), dtype=np.float32)
    assert_matches(qw.matmul_t(x), x @ qw.dequantize().T, f"x ({m}, 517) @ W.T, W (1001, 517)")


def test_output_is_float32_even_for_float64_input():
    qw = quantize(random_weight(20, 16))
    x = np.random.default_rng(3).standard_normal((2, 16))  # float64
    assert_matches(qw.matmul_t(x), x.astype(np.float32) @ qw.dequantize().T, "float64 x")


@pytest.mark.parametrize("rows", [5, -1, slice(2, 9), np.array([[0, 3, 3], [19, 1, 2]])],
                         ids=["int", "negative", "slice", "ids[2,3]"])
def test_getitem_returns_dequantized_rows(rows):
    qw = quantize(random_weight(20, 16))
    got = qw[rows]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, qw.dequantize()[rows])


def test_read_only_memmap_is_used_in_place(tmp_path, n_threads, small_tiles):
    qw = quantize(random_weight(50, 33))
    path = tmp_path / "q.bin"
    qw.q.tofile(path)
    q_file = np.memmap(path, dtype=np.int8, mode="r", shape=qw.q.shape)
    mapped = Int8Weight(q_file, qw.scale)
    assert np.shares_memory(mapped.q, q_file), "q was copied out of the memmap"
    x = np.random.default_rng(4).standard_normal((3, 33), dtype=np.float32)
    assert_matches(mapped.matmul_t(x), qw.matmul_t(x), "memmap q")
    np.testing.assert_array_equal(mapped[[1, 4]], qw[[1, 4]])


def test_rejects_wrong_dtype_or_scale_shape():
    with pytest.raises(MinineoError, match="int8"):
        Int8Weight(np.zeros((2, 3), dtype=np.int16), np.ones(2, dtype=np.float32))
    with pytest.raises(MinineoError, match="scale"):
        Int8Weight(np.zeros((2, 3), dtype=np.int8), np.ones(3, dtype=np.float32))


def test_set_threads_controls_the_count():
    try:
        threads.set_threads(2)
        assert threads.get_threads() == 2
        threads.set_threads(None)
        assert threads.get_threads() == threads.physical_cores() >= 1
    finally:
        threads.set_threads(None)


@pytest.mark.parametrize("bad", [0, -3, 1.5, "2", True])
def test_set_threads_rejects_invalid_counts(bad):
    with pytest.raises(MinineoError, match="threads"):
        threads.set_threads(bad)


def test_parallel_for_runs_each_item_once_and_raises_worker_errors(n_threads):
    seen = []
    threads.parallel_for(100, seen.append)  # list.append is atomic in CPython
    assert sorted(seen) == list(range(100))

    def fail_on_7(i):
        if i == 7:
            raise RuntimeError("item 7")

    with pytest.raises(RuntimeError, match="item 7"):
        threads.parallel_for(20, fail_on_7)


def blas_threads():   # NumPy's BLAS only: torch, once another test imports it, brings a BLAS of its own
    return [info["num_threads"] for info in threadpool_info()
            if info["user_api"] == "blas" and "numpy" in info["filepath"]]


def test_blas_runs_one_thread_inside_the_pool_and_its_own_threads_only_when_asked():
    # minineo's threads split the matmuls; BLAS's own threads would fight them (see threads.py).
    try:
        threads.set_threads(2)
        assert blas_threads() == [1] and threads.get_threads() == 2
        with threads.blas_threads(2):
            assert blas_threads() == [2]
        inside = []
        threads.parallel_for(4, lambda i: inside.append(blas_threads()))
        assert inside == [[1]] * 4
        assert blas_threads() == [1]
    finally:
        threads.set_threads(None)


def test_default_threads_respect_cpu_affinity(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    threads.physical_cores.cache_clear()
    try:
        assert threads.physical_cores() == 1
    finally:
        threads.physical_cores.cache_clear()
