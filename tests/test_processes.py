"""int8 products on worker processes (minineo/fast/processes.py): the threads' numbers bit for bit,
only where chosen and possible, and a failing or interrupted worker never gives a wrong answer."""
import gc
import os

import numpy as np
import pytest

import minineo
from conftest import every_choice_forced, random_ids
from minineo.fast import choices, processes, threads
from minineo.fast.int8 import Int8Weight, quantize
from minineo.weights.int8_copy import quantize_checkpoint
from minineo.weights.safetensors_io import SafetensorsFile, write_safetensors

def forced(workers, cast="direct", form="dot"):
    # Every choice forced (nothing is measured); 1 KiB tiles: 7 rows when in = 33, so a product has many tiles.
    return every_choice_forced(decode="tiles", prefill="tiles", tile_form=form, int8_tile_kib=1, int8_cast=cast,
                               int8_prefill_cast=cast, int8_prefill_rows=9, fp32_threads_from=1, int8_threads_from=1,
                               int8_workers=workers)


def way(workers, cast="direct", form="dot"):
    return choices.Choices(**choices.forced_choices(forced(workers, cast, form)))


@pytest.fixture(autouse=True)
def fresh_workers():
    processes.close()
    processes._broken = None
    yield
    processes.close()
    processes._broken = None
    threads.set_threads(None)
    choices.forget()


@pytest.fixture
def mapped_weight(tmp_path):  # an int8 weight [100, 33] mapped from a safetensors file, and its float32 values
    w = np.random.default_rng(0).standard_normal((100, 33), dtype=np.float32)
    qw = quantize(w)
    path = tmp_path / "w.safetensors"
    write_safetensors(path, {"before": np.ones(5, np.float32), "w": qw.q})   # "w" does not start the data
    return Int8Weight(SafetensorsFile(path).raw("w"), qw.scale), qw.dequantize()


def test_mapped_file_finds_a_views_bytes_in_its_file(mapped_weight):
    weight, _ = mapped_weight
    path, offset, inode = processes.mapped_file(weight.q)
    rows = processes.mapped_file(weight.q[10:20])
    stored = np.fromfile(path, np.int8, count=weight.q.size, offset=offset).reshape(weight.shape)
    np.testing.assert_array_equal(stored, weight.q)
    assert rows == (path, offset + 10 * 33, os.stat(path).st_ino), (rows, offset)
    assert processes.mapped_file(weight.q[:, 1:]) is None          # not contiguous: not one run of bytes
    assert processes.mapped_file(np.array(weight.q)) is None       # a copy in memory: no file to map


@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("cast", ["direct", "int16"])
@pytest.mark.parametrize("form", ["dot", "matmul"])
@pytest.mark.parametrize("m", [1, 3])
def test_workers_compute_the_threads_numbers_bit_for_bit(mapped_weight, n_threads, cast, form, m):
    weight, dense = mapped_weight
    threads.set_threads(n_threads)
    x = np.random.default_rng(m).standard_normal((m, 33), dtype=np.float32)
    by_threads = weight.matmul_t(x, way("threads", cast, form))
    assert processes._pool is None
    by_processes = weight.matmul_t(x, way("processes", cast, form))
    assert processes._pool is not None and len(processes._pool.procs) == n_threads - 1
    differ = np.argwhere(by_processes != by_threads)
    assert differ.size == 0, (f"first differing output {differ[0]}: {by_processes[tuple(differ[0])]} "
                              f"against {by_threads[tuple(differ[0])]}")
    np.testing.assert_allclose(by_processes, x @ dense.T, rtol=1e-5, atol=1e-5)
    again = weight.matmul_t(2 * x, way("processes", cast, form))   # the weight is known now: no second announcement
    np.testing.assert_array_equal(again, weight.matmul_t(2 * x, way("threads", cast, form)))


def test_only_a_few_rows_of_a_mapped_weight_go_to_the_workers(mapped_weight, monkeypatch):
    weight, dense = mapped_weight
    threads.set_threads(2)
    sent, send = [], processes.Workers.send
    monkeypatch.setattr(processes.Workers, "send", lambda self, *args: sent.append(args) or send(self, *args))
    in_memory = Int8Weight(np.array(weight.q), weight.scale)
    prompt = np.ones((choices.PREFILL_ROWS, 33), np.float32)
    for w, x in ((in_memory, prompt[:1]), (weight, prompt), (weight, prompt[:1]), (in_memory, prompt)):
        np.testing.assert_allclose(w.matmul_t(x, way("processes")), x @ dense.T, rtol=1e-5, atol=1e-5)
    threads.set_threads(1)                                   # one thread: nothing to share
    weight.matmul_t(prompt[:1], way("processes"))
    rows = [len(x2) for where, shape, x2, *rest in sent]
    assert rows == [1], f"products of {rows} rows of x sent; only the mapped weight's one row should go"


def test_a_worker_that_dies_is_replaced_by_this_process(mapped_weight, capsys):
    weight, dense = mapped_weight
    threads.set_threads(2)
    x = np.random.default_rng(1).standard_normal((1, 33), dtype=np.float32)
    want = weight.matmul_t(x, way("threads"))
    weight.matmul_t(x, way("processes"))
    worker = processes._pool.procs[0]
    worker.kill()
    worker.wait()
    np.testing.assert_array_equal(weight.matmul_t(x, way("processes")), want)
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "int8 worker process" in said[0] and "threads from now on" in said[0], said
    assert processes._pool is None and processes._broken
    np.testing.assert_array_equal(weight.matmul_t(x, way("processes")), want)   # on threads now
    assert processes._pool is None


def test_an_interrupted_product_leaves_no_answer_for_the_next(mapped_weight):
    weight, _ = mapped_weight
    threads.set_threads(2)
    x = np.random.default_rng(2).standard_normal((1, 33), dtype=np.float32)
    want = weight.matmul_t(x, way("threads"))

    def interrupted(i):
        raise KeyboardInterrupt
    y = np.empty((1, 100), np.float32)
    with pytest.raises(KeyboardInterrupt):
        processes.shared(weight, x, y, 7, interrupted, 2, way("processes"))
    assert processes._pool is None, "the workers that were mid-product must be closed"
    np.testing.assert_array_equal(weight.matmul_t(x, way("processes")), want)


def test_an_int8_checkpoint_decodes_the_same_tokens_on_processes(numpy_checkpoint, tmp_path, monkeypatch):
    int8 = quantize_checkpoint(numpy_checkpoint(hidden_size=64, intermediate_size=256), tmp_path / "int8")
    threads.set_threads(2)
    runs = {}
    for workers in ("threads", "processes"):
        monkeypatch.setenv(choices.ENV, forced(workers, "int16"))
        choices.forget()
        runs[workers] = decode_logits(minineo.load(int8))
    assert processes._pool is not None, "the decode steps never reached the workers"
    differ = np.argwhere(runs["processes"] != runs["threads"])
    assert differ.size == 0, f"first differing logit (step, row, token): {differ[0]}"


def test_a_product_larger_than_the_shared_buffer_grows_it(tmp_path):
    qw = quantize(np.random.default_rng(3).standard_normal((50000, 8), dtype=np.float32))
    write_safetensors(tmp_path / "wide.safetensors", {"w": qw.q})
    weight = Int8Weight(SafetensorsFile(tmp_path / "wide.safetensors").raw("w"), qw.scale)
    threads.set_threads(2)
    x = np.random.default_rng(4).standard_normal((6, 8), dtype=np.float32)
    small = weight.matmul_t(x[:1], way("processes"))                  # fits the first buffer
    size = processes._pool.io.size
    wide = weight.matmul_t(x, way("processes"))                       # 6 x (8 + 50,000) floats: more than it
    assert processes._pool.io.size > size >= 4 * (8 + 50000), (size, processes._pool.io.size)
    np.testing.assert_array_equal(wide, weight.matmul_t(x, way("threads")))
    np.testing.assert_array_equal(small, weight.matmul_t(x[:1], way("threads")))
    processes.close()
    np.testing.assert_array_equal(weight.matmul_t(x, way("processes")), wide)   # a new pool's first product
    assert processes._broken is None and processes._pool.io.size >= 4 * 6 * (8 + 50000)


def decode_logits(model, steps=4):  # greedy decode of 2 rows from a 5-token prompt: each step's last logits
    cache = model.new_cache(2)
    logits = [model(random_ids((2, 5)), cache=cache)[:, -1]]
    for _ in range(steps):
        logits.append(model(logits[-1].argmax(-1)[:, None], cache=cache)[:, -1])
    return np.stack(logits)


@pytest.mark.skipif(not processes.available(), reason="an Arena is shared through a memfd (Linux)")
def test_weights_quantized_at_load_decode_the_same_on_processes(numpy_checkpoint, monkeypatch):
    threads.set_threads(2)
    logits = {}
    for seed in (1, 2):   # the second model's arena may reuse the first one's fd number: the workers must not
        src = numpy_checkpoint(seed=seed, hidden_size=64, intermediate_size=256)
        for workers in ("threads", "processes"):
            monkeypatch.setenv(choices.ENV, forced(workers, "int16"))
            choices.forget()
            model = minineo.load(src, int8=True)
            assert processes.mapped_file(model.params["blocks"][0]["mlp"]["c_fc"]["w"].q) is not None
            logits[seed, workers] = decode_logits(model)
            del model
            gc.collect()
        assert processes._pool is not None, "the decode steps never reached the workers"
        differ = np.argwhere(logits[seed, "processes"] != logits[seed, "threads"])
        assert differ.size == 0, f"model {seed}: first differing logit (step, row, token): {differ[0]}"
    assert not np.array_equal(logits[1, "threads"], logits[2, "threads"])
    assert processes._arenas == {}, "a dropped model's arena keeps its memory"


def test_a_checkpoint_rewritten_in_place_is_read_anew_by_the_workers(tmp_path):
    threads.set_threads(2)
    path, x = tmp_path / "w.safetensors", np.ones((1, 33), np.float32)
    got = []
    for seed in (5, 6):   # the same path, another file (os.replace, as `minineo.quantize --force` moves it in)
        qw = quantize(np.random.default_rng(seed).standard_normal((100, 33), dtype=np.float32))
        write_safetensors(tmp_path / "new.safetensors", {"w": qw.q})
        os.replace(tmp_path / "new.safetensors", path)
        weight = Int8Weight(SafetensorsFile(path).raw("w"), qw.scale)
        got.append((weight.matmul_t(x, way("processes")), weight.matmul_t(x, way("threads"))))
    assert processes._pool is not None and len(processes._pool.weights) == 2
    for (by_processes, by_threads), seed in zip(got, (5, 6)):
        np.testing.assert_array_equal(by_processes, by_threads, err_msg=f"the file written with seed {seed}")


@pytest.mark.parametrize("memfd", [True, False])
def test_calibration_offers_processes_only_where_weights_quantized_at_load_can_go_too(monkeypatch, memfd):
    from minineo.fast import measure
    labels = []

    def timed(candidates, one_pass, passes=measure.PASSES):   # every candidate 1 s, the processes 0.5 s
        labels.extend(candidates)
        return {c: 0.5 if str(c).startswith("processes") else 1.0 for c in candidates}
    monkeypatch.setattr(measure, "timed_passes", timed)
    monkeypatch.setattr(measure, "workers_available", lambda: memfd)
    threads.set_threads(2)
    chosen, _ = measure.measure(2, nbytes=1)
    offered = any(str(label).startswith("processes") for label in labels)
    assert offered == memfd and chosen.int8_workers == ("processes" if memfd else "threads"), (labels, chosen)


def test_workers_that_cannot_start_leave_the_product_to_this_process(mapped_weight, monkeypatch, capsys):
    weight, _ = mapped_weight
    threads.set_threads(2)
    x = np.ones((1, 33), np.float32)
    want = weight.matmul_t(x, way("threads"))

    def no_processes(*args, **kwargs):
        raise OSError("Resource temporarily unavailable")
    monkeypatch.setattr(processes.subprocess, "Popen", no_processes)
    np.testing.assert_array_equal(weight.matmul_t(x, way("processes")), want)
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "could not start (Resource temporarily unavailable)" in said[0], said


@pytest.mark.parametrize("missing", ["/proc", "memfd"])
def test_an_arena_without_proc_or_memfd_is_plain_memory(monkeypatch, missing):
    class NoProc(np.memmap):   # a system without /proc: the path of the memfd cannot be opened
        def __new__(cls, *args, **kwargs):
            raise FileNotFoundError("/proc/self/fd/3")

    def refused(name):         # a sandbox that refuses the system call
        raise PermissionError("memfd_create")
    if missing == "/proc":
        monkeypatch.setattr(np, "memmap", NoProc)
    else:
        monkeypatch.setattr(os, "memfd_create", refused, raising=False)
    arena = processes.Arena(1000)
    q = arena.take((10, 33), np.int8)
    assert arena.fd is None and processes._arenas == {} and processes.mapped_file(q) is None
    assert q.shape == (10, 33) and q.dtype == np.int8 and q.flags.c_contiguous
