"""`python -m minineo.bench` end to end on a tiny shape: it writes its checkpoints, runs each
configuration in its own process and writes the table. No timing is asserted: only that it runs."""
import subprocess
import sys

import pytest

from conftest import every_choice_forced
from minineo.commands import bench


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):   # the choices the bench measures go here, not to the user's cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def run(tmp_path, *extra):
    out = tmp_path / "bench.md"
    # 16 MB of weights for the ceiling: seconds, not the 1 GB a real bench reads
    argv = ["--model", "tiny", "--prompt", "8,20", "--new-tokens", "3", "--runs", "2", "--threads", "1",
            "--cache-dir", str(tmp_path / "cache"), "--ceiling-mb", "16", "--out", str(out), *extra]
    assert bench.main(argv) == 0
    return out.read_text()


def test_tiny_shape_end_to_end(tmp_path, capsys):
    text = run(tmp_path, "--dtype", "fp32,int8", "--threads", "1,2", "--batch", "1,4")
    print(text)
    assert text.startswith("CPU: ") and "NumPy" in text and "cores, L2 " in text and ", L3 " in text
    assert capsys.readouterr().err.startswith(text.splitlines()[0] + "\n")   # the same line before the runs begin
    assert "GB/s with 1 thread, " in text and "GB/s with 2 threads" in text and "2 threads: decode=" in text
    assert ("| model | threads | engine | dtype | load s | prefill 8 tok/s | prefill 20 tok/s | decode tok/s "
            "| decode % of ceiling | decode x4 tok/s | decode x4 % of ceiling | peak RSS GB |") in text
    rows = [line for line in text.splitlines() if line.startswith("| tiny |")]
    assert [row.split(" | ")[1:4] for row in rows] == [["1", "minineo", "fp32"], ["1", "minineo", "int8"],
                                                       ["2", "minineo", "fp32"], ["2", "minineo", "int8"]]
    for row in rows:
        cells = row.strip("| ").split(" | ")[4:]
        numbers = [float(cell.rstrip("%")) for cell in cells]   # % of the ceiling: a tiny model reads ~0%
        assert len(numbers) == 8 and all(n > 0 or cell.endswith("%") for n, cell in zip(numbers, cells)), row
        assert [cell.endswith("%") for cell in cells] == [False] * 4 + [True, False, True, False], row
    assert (tmp_path / "cache" / "tiny-fp32" / "model.safetensors").exists()
    assert (tmp_path / "cache" / "tiny-int8" / "config.json").exists()


def test_the_header_names_the_blas_kernel_and_the_openblas_settings(monkeypatch):
    # Only the header's text is made here: nothing is run with these settings (the bench's children would
    # inherit them, and OpenBLAS reads them once, when it loads).
    from threadpoolctl import threadpool_info
    kernels = [i for i in threadpool_info() if i["user_api"] == "blas"]
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        monkeypatch.delenv(name, raising=False)
    line = bench.machine_line(bench.machine())
    print(line)
    assert line.endswith(", OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset."), line
    for kernel in kernels:   # threadpoolctl's internal_api, version and architecture: the kernel OpenBLAS runs
        assert f"{kernel['internal_api']} {kernel['version']} ({kernel.get('architecture', '?')} kernels)" in line
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")
    assert bench.machine_line(bench.machine()).endswith(", OPENBLAS_CORETYPE=Haswell, OPENBLAS_L2_SIZE=1048576.")


def test_checkpoints_are_cached(tmp_path):
    run(tmp_path, "--dtype", "int8")
    written = (tmp_path / "cache" / "tiny-int8" / "model.safetensors").stat().st_mtime_ns
    run(tmp_path, "--dtype", "int8", "--new-tokens", "0")
    assert (tmp_path / "cache" / "tiny-int8" / "model.safetensors").stat().st_mtime_ns == written


def test_compare_with_transformers(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    text = run(tmp_path, "--dtype", "fp32", "--compare", "transformers")
    print(text)
    assert "| tiny | 1 | transformers | fp32 |" in text and "transformers 5" in text
    ratios = [line for line in text.splitlines() if line.startswith("| tiny | 1 | fp32 |")]
    assert len(ratios) == 1 and ratios[0].endswith("| 3/3 |"), ratios   # the same greedy tokens


@pytest.mark.parametrize("argv", [["--prompt", "2048"], ["--prompt", "0"], ["--dtype", "fp16"],
                                  ["--model", "13B"], ["--runs", "0"], ["--threads", "0"],
                                  ["--batch", "0"], ["--threads", "x"]])
def test_bad_arguments(argv, tmp_path):
    with pytest.raises(SystemExit) as e:
        bench.main(["--model", "tiny", "--cache-dir", str(tmp_path), *argv])
    assert e.value.code == 2


def one_error_line(capsys):  # -> the bench's stderr, checked to end in one `minineo: error:` line, no traceback
    err = capsys.readouterr().err
    print(err)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("minineo: error: "), err
    return err.strip().splitlines()[-1]


def test_a_failed_run_ends_with_one_line_saying_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "measure_machine", lambda threads, megabytes: {})
    broken = bench.checkpoint("tiny", "fp32", tmp_path / "cache") / "model.safetensors"
    broken.write_bytes(broken.read_bytes()[:1000])   # cut short: the run's load fails
    with pytest.raises(AssertionError):
        run(tmp_path, "--dtype", "fp32")
    line = one_error_line(capsys)
    assert line.startswith("minineo: error: the minineo fp32 run of tiny failed (exit code 1: ") and "model.safetensors" in line


def test_ctrl_c_ends_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "measure_machine", lambda threads, megabytes: {})

    def interrupted(spec):
        raise KeyboardInterrupt
    monkeypatch.setattr(bench, "run_child", interrupted)
    argv = ["--model", "tiny", "--dtype", "fp32", "--cache-dir", str(tmp_path / "cache")]
    assert bench.main(argv) == 130
    assert one_error_line(capsys) == "minineo: error: interrupted (Ctrl-C); no table written"


def test_unknown_model_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--model", "13B", "--cache-dir", str(tmp_path)])
    assert e.value.code == 2
    assert one_error_line(capsys).startswith("minineo: error: argument --model: expected a comma-separated list "
                                              "of 125M, 1.3B, 2.7B, tiny, got '13B'")


def test_the_bench_imports_without_unix_only_modules():
    # Windows has no `resource`: the bench imports, and peak memory comes another way or is "n/a".
    code = ("import sys; sys.modules['resource'] = None\n"
            "import minineo.commands.bench, minineo.commands.measure_configuration as m\n"
            "print(m.peak_memory_bytes())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None" or int(out) > 0, out
    assert bench.gb(None) == "n/a"


def test_prefill_is_the_median_of_its_passes(tmp_path, monkeypatch):
    # One pass of a prompt is noisy on a shared machine; each run reports the median of PREFILL_REPEATS.
    from minineo.commands import measure_configuration as child
    from minineo.fast import choices
    monkeypatch.setenv(choices.ENV, every_choice_forced())
    choices.forget()   # every choice forced: nothing is measured
    path = bench.checkpoint("tiny", "fp32", tmp_path / "cache")
    passes = iter([4.0, 1.0, 2.0])   # seconds of the prompt's timed passes, in turn; loading takes 0.5
    monkeypatch.setattr(child, "timed", lambda fn, *args: (next(passes) if args else 0.5, fn(*args)))
    result = child.measure("minineo", str(path), 1, [8], 0, [1])
    choices.forget()
    assert child.PREFILL_REPEATS == 3 and result["prefill"] == {"8": 8 / 2.0}, result["prefill"]
