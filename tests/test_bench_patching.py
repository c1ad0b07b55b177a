"""scripts/bench_patching.py on a tiny shape, so that it cannot rot: its grids, and the run end to end
(minineo, transformers with torch hooks and TransformerLens give the same grid). No timing is asserted."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import minineo
from minineo.weights.random_checkpoint import write_random_checkpoint

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_patching.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_patching", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_minineo_grid_on_the_tiny_shape(bench, tmp_path):
    config = bench.SHAPES["tiny"]
    clean, corrupted = bench.prompts(config, 6)
    assert (clean[3:] == corrupted[3:]).all() and (clean[:3] != corrupted[:3]).any()
    model = minineo.load(write_random_checkpoint(tmp_path, config, scale=bench.SCALES["tiny"]))
    good, bad = bench.answers(model, clean, corrupted)
    grid = bench.minineo_grid(model, clean, corrupted, good, bad)
    assert grid.shape == (config.num_layers, 6) and np.isfinite(grid).all()
    _, cache = model.run_with_cache(clean)
    for layer, t in [(0, 1), (config.num_layers - 1, 5)]:   # one patch assembled by hand, as the script means it
        def patch(x, hook):   # [T, d]
            x = x.copy()
            x[t] = cache["resid_pre", layer][t]
            return x
        logits = model.run_with_hooks(corrupted, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", patch)])
        np.testing.assert_allclose(grid[layer, t], logits[-1, good] - logits[-1, bad], rtol=1e-4, atol=1e-5)


def test_three_engines_end_to_end(bench, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("transformer_lens")
    assert bench.main(["--shape", "tiny", "--tokens", "6", "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    print(out)
    assert out.startswith("CPU: ") and "OPENBLAS_CORETYPE" in out and "threads: torch 1, minineo 1" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| engine")]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == list(bench.GRIDS)
    largest = float(out.split("largest difference between any two grids: ")[1].split()[0])
    spread = float(out.split("the metric's range: ")[1].split(")")[0])
    assert largest < 1e-4 and spread > 0.1, out
