"""`python -m minineo.bench` end to end on a tiny shape: it writes its checkpoints, runs each
configuration in its own process and writes the table. No timing is asserted: only that it runs."""
import pytest

from minineo.commands import bench


def run(tmp_path, *extra):
    out = tmp_path / "bench.md"
    argv = ["--model", "tiny", "--prompt", "8,20", "--new-tokens", "3", "--runs", "2", "--threads", "1",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out), *extra]
    assert bench.main(argv) == 0
    return out.read_text()


def test_tiny_shape_end_to_end(tmp_path):
    text = run(tmp_path, "--dtype", "fp32,int8", "--threads", "1,2", "--batch", "1,4")
    print(text)
    assert text.startswith("Machine: ") and "NumPy" in text and "cores" in text
    assert ("| model | threads | engine | dtype | load s | prefill 8 tok/s | prefill 20 tok/s | decode tok/s "
            "| decode x4 tok/s | peak RSS GB |") in text
    rows = [line for line in text.splitlines() if line.startswith("| tiny |")]
    assert [row.split(" | ")[1:4] for row in rows] == [["1", "minineo", "fp32"], ["1", "minineo", "int8"],
                                                       ["2", "minineo", "fp32"], ["2", "minineo", "int8"]]
    for row in rows:
        numbers = [float(cell) for cell in row.strip("| ").split(" | ")[4:]]
        assert len(numbers) == 6 and all(n > 0 for n in numbers), row
    assert (tmp_path / "cache" / "tiny-fp32" / "model.safetensors").exists()
    assert (tmp_path / "cache" / "tiny-int8" / "config.json").exists()


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
