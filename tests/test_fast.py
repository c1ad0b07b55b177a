"""minineo.fast computes the same products as the plain `x @ w.T`: every weight kind, 1, 2 and 3
threads, whatever the machine's core count, each way of computing a product that choices.py can
pick (forced one by one), whether or not a product is split into tiles."""
import ctypes
import importlib
import subprocess
import sys

import numpy as np
import pytest

import minineo
from conftest import assert_close, every_choice_forced
from minineo.fast import Int8Weight, TiledWeight, choices, quantize, threads
from minineo.model.linear import linear
from minineo.model.mlp import gelu_new

tiled = importlib.import_module("minineo.fast.tiled")   # the module: minineo.fast.tiled is also a function


# Every way choices.py can pick, each forced in turn. int8_tile_kib=64: 14-row tiles when in = 1100.
# Every product is split among the threads, however small: otherwise a wrong tile offset would only show on big ones.
SPLIT_ALL = dict(fp32_threads_from=1, int8_threads_from=1, int8_prefill_rows=9)   # and 9-row int8 prompt tiles
TILES = dict(decode="tiles", prefill="tiles")
SHARED = dict(prompt_attention="heads", prompt_elementwise="rows")
EVERY_CHOICE = {
    "blas": every_choice_forced(int8_tile_kib=64, **SPLIT_ALL),
    "tiles matmul, int8 via int16, heads and rows shared": every_choice_forced(
        **TILES, int8_tile_kib=64, int8_cast="int16", int8_prefill_cast="int16", **SHARED, **SPLIT_ALL),
    "tiles dot": every_choice_forced(**TILES, tile_form="dot", tiles_per_thread=1, int8_tile_kib=64,
                                     int8_prefill_cast="int16", **SPLIT_ALL),
    "tiles dot x16, 1 KiB int8 tiles via int16, heads and rows shared": every_choice_forced(
        **TILES, tile_form="dot", tiles_per_thread=16, int8_tile_kib=1, int8_cast="int16", **SHARED,
        int8_workers="processes", **SPLIT_ALL),
}


def force(monkeypatch, text):  # MININEO_CHOICES=text for this test, and forget what was chosen before
    monkeypatch.setenv(choices.ENV, text)
    choices.forget()


@pytest.fixture(params=list(EVERY_CHOICE))
def every_choice(request, monkeypatch):
    force(monkeypatch, EVERY_CHOICE[request.param])
    yield choices.current()
    choices.forget()


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"{n} threads")
def n_threads(request):
    threads.set_threads(request.param)
    yield request.param
    threads.set_threads(None)


@pytest.mark.parametrize("m", [1, 3, 40], ids=["decode: 1 row", "3 rows", "prefill: 40 rows"])
@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_tiled_product_equals_x_at_w_transposed(n_threads, every_choice, m, kind):
    rng = np.random.default_rng(m)
    # 301 rows do not divide into equal tiles, for any thread count
    w = rng.standard_normal((301, 1100), dtype=np.float32)
    x = rng.standard_normal((2, m, 1100), dtype=np.float32)
    weight = TiledWeight(w) if kind == "float32" else quantize(w)
    dense = w if kind == "float32" else weight.dequantize()
    b = rng.standard_normal(301, dtype=np.float32)
    ours = linear(x, weight, b)
    assert ours.dtype == np.float32 and ours.shape == (2, m, 301)
    # Against the exact (float64) product: a float32 reference rounds too, so the two float32 results can
    # differ by twice what either is off by (1.07e-4 on Zen 5's OpenBLAS kernels, each ~7e-5 from exact).
    exact = x.astype(np.float64) @ dense.T.astype(np.float64) + b
    assert_close(ours, exact, f"{kind}, {n_threads} threads, {m} rows, {every_choice}", tol=1e-4)


def spy(monkeypatch, cls, name):  # -> the list of (args) each call of cls.name gets, the call still made
    calls, real = [], getattr(cls, name)
    monkeypatch.setattr(cls, name, lambda self, *args: (calls.append(args), real(self, *args))[1])
    return calls


def count_products(monkeypatch):  # -> {"dot": n, "matmul": n}: the BLAS calls the tiles make, counted
    counts = {"dot": 0, "matmul": 0}
    for name in counts:
        real = getattr(np, name)
        monkeypatch.setattr(np, name, lambda *a, _real=real, _name=name, **k: (
            counts.__setitem__(_name, counts[_name] + 1), _real(*a, **k))[1])
    return counts


@pytest.mark.parametrize("kib, n_threads, sizes", [
    (640, 1, {64}), (640, 2, {64}),        # 64 rows of 2560 float32 are 640 KiB: 160 tiles
    (2048, 1, {201, 190}),                 # at most 204 rows: 51 tiles, evened out to 201 rows (the last 190)
    (2048, 2, {197, 193}),                 # and 52 tiles on two threads, 26 each: 197 rows (the last 193)
])
def test_int8_tiles_are_the_measured_size_not_one_big_conversion(monkeypatch, kib, n_threads, sizes):
    # Decode converts a few rows at a time into a buffer that stays in the cache (2.7B's MLP here).
    force(monkeypatch, every_choice_forced(decode="tiles", tile_form="dot", int8_tile_kib=kib, **SPLIT_ALL))
    threads.set_threads(n_threads)
    w = quantize(np.random.default_rng(0).standard_normal((10240, 2560), dtype=np.float32))
    calls = spy(monkeypatch, Int8Weight, "tile_product")
    products = count_products(monkeypatch)
    try:
        w.matmul_t(np.ones((1, 2560), np.float32))
    finally:
        threads.set_threads(None)
    got = {r1 - r0 for x2, r0, r1, out, chosen in calls}
    assert got == sizes and products == {"dot": len(calls), "matmul": 0}, (got, products)


@pytest.mark.parametrize("n_out, n_threads, tiles", [
    (2560, 2, [640] * 4),          # 1,024-row tiles would be 1024, 1024, 512: one thread alone on the last
    (2560, 3, [854, 854, 852]),
    (768, 2, [384, 384]),          # one 768-row tile would leave the second thread idle
    (10240, 2, [1024] * 10),       # already 5 tiles each
    (768, 1, [768]),
])
def test_a_prompts_int8_tiles_give_every_thread_as_many(monkeypatch, n_out, n_threads, tiles):
    force(monkeypatch, every_choice_forced(int8_tile_kib=64, fp32_threads_from=1, int8_threads_from=1,
                                           int8_prefill_rows=1024))
    threads.set_threads(n_threads)
    w = quantize(np.random.default_rng(0).standard_normal((n_out, 64), dtype=np.float32))
    calls = spy(monkeypatch, Int8Weight, "tile_product")
    try:
        w.matmul_t(np.ones((40, 64), np.float32))
    finally:
        threads.set_threads(None)
    got = sorted((r1 - r0 for x2, r0, r1, out, chosen in calls), reverse=True)
    assert got == tiles, f"tile heights {got}, expected {tiles}"


@pytest.mark.parametrize("cast, prompt_cast", [("direct", "int16"), ("int16", "direct")])
def test_int8_tiles_are_cast_the_chosen_way(monkeypatch, cast, prompt_cast):
    # "int16" widens each tile to int16 before float32 (two casts NumPy runs faster than the one on some
    # CPUs); "direct" casts once. A decode's tiles (1 row of x) take int8_cast, a prompt's (40 rows)
    # int8_prefill_cast. The scratch buffers a product asks for show which way ran.
    from minineo.fast import int8
    force(monkeypatch, every_choice_forced(**TILES, tile_form="dot", int8_tile_kib=64, int8_cast=cast,
                                           int8_prefill_cast=prompt_cast, **SPLIT_ALL))
    real = int8._scratch
    w = quantize(np.random.default_rng(0).standard_normal((100, 300), dtype=np.float32))
    for rows, way in ((1, cast), (40, prompt_cast)):
        asked = []
        monkeypatch.setattr(int8, "_scratch", lambda dtype, shape: (asked.append(dtype), real(dtype, shape))[1])
        x = np.random.default_rng(1).standard_normal((rows, 300), dtype=np.float32)
        assert_close(w.matmul_t(x), x.astype(np.float64) @ w.dequantize().T.astype(np.float64), f"{rows} rows, {way}",
                     tol=1e-4)
        assert (np.int16 in asked) == (way == "int16") and np.float32 in asked, (rows, way, asked)


@pytest.mark.parametrize("text, whole, form", [
    ("decode=blas,prefill=tiles,tile_form=dot", {1: True, 40: False}, "dot"),
    ("decode=tiles,prefill=blas,tile_form=matmul", {1: False, 40: True}, "matmul"),
])
def test_each_choice_picks_its_way(monkeypatch, text, whole, form):
    # The choices reach the product: whole by BLAS, or tiles in the chosen form (prompts: always matmul).
    full = every_choice_forced(**choices.forced_choices(text), tiles_per_thread=4, int8_tile_kib=64, **SPLIT_ALL)   # 8 tiles on 2 threads
    force(monkeypatch, full)
    threads.set_threads(2)
    try:
        w = TiledWeight(np.ones((4096, 1024), np.float32))
        for m, by_blas in whole.items():
            calls = spy(monkeypatch, TiledWeight, "tile_product")
            products = count_products(monkeypatch)
            w.matmul_t(np.ones((m, 1024), np.float32))
            tiles_form = form if m == 1 else "matmul"   # a prompt's tiles always take matmul
            assert (not calls) if by_blas else products[tiles_form] == len(calls) == 8, (m, products, len(calls))
            monkeypatch.undo()
            force(monkeypatch, full)
    finally:
        threads.set_threads(None)


@pytest.mark.parametrize("text, message", [("decode=fast", "decode must be one of blas, tiles"),
                                           ("tiles=4", "unknown choice 'tiles'"),
                                           ("int8_tile_kib=0", "int8_tile_kib must be an integer >= 1")])
def test_forcing_a_choice_that_does_not_exist_is_one_clear_error(text, message):
    with pytest.raises(minineo.MinineoError, match=message):
        choices.forced_choices(text)


def test_a_full_set_of_forced_choices_measures_nothing(monkeypatch):
    force(monkeypatch, EVERY_CHOICE["tiles dot"])
    monkeypatch.setattr(choices, "calibrate_in_child", lambda threads: pytest.fail("measured"))
    assert choices.current() == choices.Choices(decode="tiles", prefill="tiles", tile_form="dot",
                                                tiles_per_thread=1, int8_tile_kib=64, int8_cast="direct",
                                                int8_prefill_cast="int16", prompt_attention="one", prompt_elementwise="one",
                                                fp32_threads_from=1, int8_threads_from=1, int8_prefill_rows=9)


def test_cached_choices_are_read_back_per_thread_count(monkeypatch, tmp_path):
    # What a calibration wrote for this CPU is used, per thread count; a forced choice overrides it.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(choices, "calibrate_in_child", lambda threads: pytest.fail("measured"))
    two = choices.Choices(decode="tiles", tile_form="dot", tiles_per_thread=16, int8_tile_kib=512, prefill="tiles")
    choices.write_cached(2, two, {"ceiling_gb_per_s": 30.0})
    choices.write_cached(1, choices.Choices(int8_tile_kib=2048), {"ceiling_gb_per_s": 15.0})
    assert choices.cache_path().is_relative_to(tmp_path)
    force(monkeypatch, "")
    assert choices.choose(2) == two and choices.choose(1) == choices.Choices(int8_tile_kib=2048)
    force(monkeypatch, "decode=blas")
    assert choices.choose(2) == choices.Choices(decode="blas", tile_form="dot", tiles_per_thread=16,
                                                int8_tile_kib=512, prefill="tiles")
    assert choices.read_measured(1) == {"ceiling_gb_per_s": 15.0}
    # a file from a minineo that measured fewer choices (no int8_cast) is measured again, not half used
    entry = choices.dataclasses.asdict(two)
    del entry["int8_cast"]
    choices.cache_path().write_text(choices.json.dumps({"threads": {"2": {"choices": entry, "measured": {}}}}))
    assert choices.read_cached(2) is None


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_products_are_shared_from_the_measured_size_on(monkeypatch, kind):
    # Each kind of weight has its own threshold (weights x rows of x): below it one thread, from it all.
    thresholds = (dict(fp32_threads_from=6000, int8_threads_from=2) if kind == "float32"
                  else dict(fp32_threads_from=2, int8_threads_from=6000))
    force(monkeypatch, every_choice_forced(**TILES, tile_form="dot", int8_tile_kib=64, int8_prefill_rows=9, **thresholds))
    matrix = np.random.default_rng(0).standard_normal((100, 30), dtype=np.float32)   # 3,000 weights
    weight = TiledWeight(matrix) if kind == "float32" else quantize(matrix)
    used = []
    real = threads.parallel_for
    monkeypatch.setattr(tiled, "parallel_for", lambda n, work, t=None: (used.append(t), real(n, work, t))[1])
    threads.set_threads(2)
    try:
        for m in (1, 2):   # 3,000 and 6,000 weights x rows
            weight.matmul_t(np.ones((m, 30), np.float32))
    finally:
        threads.set_threads(None)
    assert used == [1, 2], used


def test_fast_model_equals_plain_model(n_threads, every_choice):
    from conftest import text_checkpoint
    import tempfile
    with tempfile.TemporaryDirectory() as directory:
        text_checkpoint(directory)
        ids = np.random.default_rng(0).integers(0, 50257, (2, 40))   # 40 >= PREFILL_ROWS: a prompt's attention
        for int8 in (False, True):
            fast, plain = minineo.load(directory, int8=int8), minineo.load(directory, int8=int8, fast=False)
            if not int8:
                assert isinstance(plain.params["blocks"][0]["mlp"]["c_fc"]["w"], np.ndarray)
            assert_close(fast(ids), plain(ids), f"fast vs plain, int8={int8}, {every_choice}", tol=1e-4)


def test_gelu_new_values():
    # torch.nn.functional.gelu(x, approximate="tanh") in float64, written down so that this runs without torch
    x = np.array([-3.0, -1.0, -0.5, 0.0, 0.7, 1.5, 3.0], np.float32)
    expected = [-0.0036373920817729943, -0.15880800939172324, -0.15428599017485606, 0.0,
                0.5305701347051167, 1.3995715769802328, 2.996362607918227]
    assert gelu_new(x).dtype == np.float32
    assert_close(gelu_new(x), expected, "gelu_new", tol=1e-6)


MALLINFO = '''
import ctypes, sys
import numpy as np
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                       "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "fast":
    import minineo
    minineo.load()
a = np.ones(20 * 2**20 // 4, np.float32)   # a 20 MiB temporary, as a 2.7B prompt's activations
del a
print(libc.mallinfo2().fordblks)           # bytes free in the heap, kept for the next allocation
'''


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc 2.33+")
def test_fast_load_keeps_freed_memory_in_the_process():
    kept = {mode: int(subprocess.run([sys.executable, "-c", MALLINFO, mode], capture_output=True, text=True,
                                     check=True).stdout) for mode in ("default", "fast")}
    print(f"free heap bytes after a 20 MiB temporary: {kept}")
    assert kept["fast"] >= 20 * 2**20 > kept["default"], kept


def measure_with_made_up_seconds(monkeypatch, seconds):  # -> calibrate.measure with 2 threads
    # Each candidate's timing is replaced by seconds(label), so that which one wins is known.
    from minineo.fast import measure as calibrate
    monkeypatch.setattr(calibrate, "timed_passes",
                        lambda candidates, one_pass, passes=calibrate.PASSES: {c: seconds(c) for c in candidates})
    threads.set_threads(2)
    try:
        return calibrate.measure(2, nbytes=1)
    finally:
        threads.set_threads(None)


def test_calibration_keeps_the_fastest_of_each_kind(monkeypatch):
    # The measurement must keep exactly the made-up winners (and the best fp32 speed as the ceiling).
    from minineo.fast import measure as calibrate
    fastest = {"tiles dot x16": 1.0, "processes int16 1024 KiB": 1.0, "tiles": 1.0, "512 int16": 1.0,
               "rows": 1.0}   # the others 2 s
    chosen, measured = measure_with_made_up_seconds(monkeypatch, lambda label: fastest.get(label, 2.0))
    assert chosen == choices.Choices(decode="tiles", tile_form="dot", tiles_per_thread=16, int8_tile_kib=1024,
                                     int8_cast="int16", int8_workers="processes", prefill="tiles",
                                     int8_prefill_rows=512, int8_prefill_cast="int16", prompt_elementwise="rows"), chosen
    # (threads_from: a one-row measurement has no room for any size, so they keep their defaults)
    one_row = calibrate.COLS * 4     # nbytes=1 asks for the least: one matrix of one row
    assert measured["weights_bytes"] == one_row and measured["ceiling_gb_per_s"] == one_row / 1e9
    assert set(measured["fp32_decode_gb_per_s"]) == {"blas"} | {f"tiles {f} x{k}" for f in ("matmul", "dot")
                                                                for k in (1, 4, 16)}


@pytest.mark.parametrize("threads_win_at, chosen", [
    ({2**18, 2**20, 2**21, 2**22, 2**23, 2**24}, 2**20),   # a win at 2^18 alone does not count: 2^19 lost
    (set(), 2**24),                                        # never won: shared from the largest size timed
])
def test_threads_are_used_from_the_least_size_that_wins_at_every_larger_one(monkeypatch, threads_win_at, chosen):
    from minineo.fast import measure as calibrate

    def made_up(candidates, one_pass, passes=calibrate.PASSES):   # threads take 1 s where they win, else 3
        return {(size, mode): 2.0 if mode == "1 thread" else 1.0 if size in threads_win_at else 3.0
                for size, mode in candidates}
    monkeypatch.setattr(calibrate, "timed_passes", made_up)
    rows = np.ones((2**24 // calibrate.COLS + 1, calibrate.COLS), np.float32)   # room for every size
    found = calibrate.threads_from([rows], TiledWeight, choices.Choices(), "fp32_threads_from", threads=2)
    assert found["chosen"] == chosen, found
    tiny = calibrate.threads_from([rows[:1]], TiledWeight, choices.Choices(), "int8_threads_from", threads=2)
    assert tiny["chosen"] == choices.Choices().int8_threads_from   # too small to measure: the default


@pytest.mark.parametrize("tiles_seconds, decode", [(0.97, "blas"), (0.90, "tiles")])
def test_tiles_must_beat_blas_clearly_to_be_chosen_for_decode(monkeypatch, tiles_seconds, decode):
    # Back to back, tiles time better than they run in a model (calibrate.TILES_MARGIN says why):
    # 3% faster keeps BLAS's own threads, 10% faster takes the tiles.
    chosen, _ = measure_with_made_up_seconds(monkeypatch,
                                             lambda label: tiles_seconds if label == "tiles dot x4" else 1.0)
    assert chosen.decode == decode and chosen.tile_form == "dot" and chosen.tiles_per_thread == 4, chosen
