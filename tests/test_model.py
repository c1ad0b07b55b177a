"""The model's own promises, checked without torch: caching, padding, float32, clear errors."""
import json

import numpy as np
import pytest

import minineo
from minineo.model import attention as attn
from minineo.errors import MinineoError
from conftest import assert_close, random_ids, rewrite_tensors

EXACT = 2e-5   # the same math in another order: float32 rounding only


@pytest.mark.parametrize("chunks", [[40], [1] * 40, [7, 1, 1, 13, 1, 18], [3, 37]])
def test_cache_matches_full_forward_over_several_windows(numpy_checkpoint, chunks):
    model = minineo.load(numpy_checkpoint(window_size=6))   # 40 tokens: more than six windows
    ids = random_ids((2, 40))
    cache, pieces, start = model.new_cache(2), [], 0
    for n in chunks:
        pieces.append(model(ids[:, start:start + n], cache=cache))
        start += n
    assert_close(np.concatenate(pieces, axis=1), model(ids), f"chunks {chunks}", tol=EXACT)


def test_local_cache_stays_within_the_window(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint(window_size=6))
    cache = model.new_cache(1)
    model(random_ids((1, 30)), cache=cache)
    for t in range(20):
        model(random_ids((1, 1), seed=t), cache=cache)
    for kind, layer in zip(model.config.attention_layers, cache.layers):
        kept = layer.k.shape[2] if kind == "local" else layer.n   # a local layer: a buffer of 2 windows
        assert kept == (2 * 6 if kind == "local" else 50), f"{kind} layer keeps {kept} keys"


def test_padded_batch_equals_each_sequence_alone(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint(window_size=16))
    a, b = random_ids(9, seed=1), random_ids(4, seed=2)
    batch = np.stack([a, np.concatenate([np.zeros(5, int), b])])
    mask = np.stack([np.ones(9, int), (np.arange(9) >= 5).astype(int)])
    logits = model(batch, attention_mask=mask)
    assert_close(logits[0], model(a), "row 0 alone", tol=EXACT)
    assert_close(logits[1, 5:], model(b), "left-padded row 1 alone", tol=EXACT)


def test_padded_batch_with_cache(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint(window_size=16))
    ids = random_ids((2, 12))
    mask = np.ones_like(ids)
    mask[1, :4] = 0
    full = model(ids, attention_mask=mask)
    cache = model.new_cache(2)
    pieces = [model(ids[:, :8], attention_mask=mask[:, :8], cache=cache)]
    pieces += [model(ids[:, t:t + 1], cache=cache) for t in range(8, 12)]
    assert_close(np.concatenate(pieces, 1), full, "padded batch, cached", tol=EXACT, where=mask == 1)


def test_masks_are_what_gpt_neo_defines():
    idx = np.arange(6)
    np.testing.assert_array_equal(attn.causal_mask(idx, idx), np.tril(np.ones((6, 6), bool)))
    local = np.tril(np.ones((6, 6), bool)) ^ np.tril(np.ones((6, 6), bool), -3)   # transformers' XOR
    np.testing.assert_array_equal(attn.causal_mask(idx, idx, window=3), local)


def test_hot_path_stays_float32(numpy_checkpoint, monkeypatch):
    seen = []

    def spy(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            seen.extend((name, a.dtype) for a in (*args, out) if isinstance(a, np.ndarray) and a.dtype.kind == "f")
            return out
        monkeypatch.setattr(module, name, wrapper)

    import minineo.fast.banded, minineo.model.attention, minineo.model.mlp, minineo.model.embedding, minineo.model.block
    for module in (minineo.model.attention, minineo.model.mlp, minineo.model.embedding):
        spy(module, "linear")
    spy(minineo.model.attention, "attention")
    spy(minineo.fast.banded, "attention")   # a fast load's attention: the same function, by the band
    spy(minineo.model.block, "layer_norm")
    spy(minineo.model.mlp, "gelu_new")
    model = minineo.load(numpy_checkpoint())
    cache = model.new_cache(1)
    assert model(random_ids((1, 9)), cache=cache).dtype == np.float32
    assert model(random_ids((1, 1)), cache=cache).dtype == np.float32
    wrong = sorted({(name, str(dtype)) for name, dtype in seen if dtype != np.float32})
    assert seen and not wrong, f"float64 on the hot path: {wrong}"


def test_hidden_states_and_single_sequence_shapes(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint())
    hidden = []
    final = model.forward(random_ids(7), hidden_states=hidden)
    assert final.shape == (7, 48) and len(hidden) == model.config.num_layers + 1
    assert all(h.shape == (7, 48) for h in hidden)
    assert model(random_ids(7)).shape == (7, 300) and model(random_ids((3, 7))).shape == (3, 7, 300)


def test_too_long_is_a_clear_error(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint())
    with pytest.raises(MinineoError, match="65 tokens is longer than the model's max_position_embeddings \\(64\\)"):
        model(random_ids(65))
    cache = model.new_cache(1)
    model(random_ids((1, 60)), cache=cache)
    with pytest.raises(MinineoError, match="longer than"):
        model(random_ids((1, 5)), cache=cache)


@pytest.mark.parametrize("ids, mask, message", [
    (np.array([1.5, 2.0]), None, "token ids must be integers, got float64"),
    (np.zeros((2, 2, 2), np.int64), None, r"expected a non-empty integer array \[T\] or \[B, T\]"),
    (np.array([1, 300]), None, r"token ids must be in \[0, 300\)"),
    (np.array([[1, 2]]), np.array([[1, 1, 1]]), "attention_mask: expected 0/1 values of shape"),
    (np.array([[1, 2]]), np.array([[0, 0]]), "no real token"),
])
def test_bad_inputs(numpy_checkpoint, ids, mask, message):
    with pytest.raises(MinineoError, match=message):
        minineo.load(numpy_checkpoint())(ids, attention_mask=mask)


def edit_config(directory, **changes):
    raw = json.loads((directory / "config.json").read_text()) | changes
    (directory / "config.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("changes, message", [
    (dict(model_type="gpt2"), "model_type is 'gpt2', minineo runs only 'gpt_neo'"),
    (dict(activation_function="relu"), "activation_function 'relu' is not supported"),
    (dict(attention_types=[[["global", "local"], 3]]), "expands to 6 layers, but num_layers is 4"),
    (dict(attention_types=[[["global", "sparse"], 2]]), "unknown attention type"),
    (dict(num_heads=5), "not divisible by num_heads"),
])
def test_bad_config_is_a_clear_error(numpy_checkpoint, changes, message):
    directory = numpy_checkpoint()
    edit_config(directory, **changes)
    with pytest.raises(MinineoError, match=message):
        minineo.load(directory)


def test_missing_tensor_names_it(numpy_checkpoint):
    directory = numpy_checkpoint()
    rewrite_tensors(directory, lambda t: {k: v for k, v in t.items() if k != "transformer.h.2.mlp.c_fc.bias"})
    with pytest.raises(MinineoError, match="no tensor transformer.h.2.mlp.c_fc.bias"):
        minineo.load(directory)


def test_wrong_shape_names_tensor_and_file(numpy_checkpoint):
    directory = numpy_checkpoint()
    rewrite_tensors(directory, lambda t: t | {"transformer.ln_f.bias": np.zeros(47, np.float32)})
    with pytest.raises(MinineoError, match=r"model.safetensors: tensor transformer.ln_f.bias has shape \[47\], expected \[48\]"):
        minineo.load(directory)


def test_unknown_extra_weight_is_reported(numpy_checkpoint, capsys):
    directory = numpy_checkpoint()
    rewrite_tensors(directory, lambda t: t | {"transformer.h.0.adapter.weight": np.zeros((2, 2), np.float32)})
    minineo.load(directory)
    assert "ignoring 1 tensor(s) that GPT-Neo does not use: transformer.h.0.adapter.weight" in capsys.readouterr().err


def test_missing_directory_and_offline_hub_id(tmp_path):
    with pytest.raises(MinineoError, match="no such model directory"):
        minineo.load(tmp_path / "nowhere")
    with pytest.raises(MinineoError, match="config.json"):
        minineo.load(tmp_path)   # exists but empty
    with pytest.raises(MinineoError, match="hf download minineo-tests/no-such-model --include"):
        minineo.load("minineo-tests/no-such-model")


def test_weights_are_memory_mapped(numpy_checkpoint):
    for fast in (True, False):
        wte = np.asarray(minineo.load(numpy_checkpoint(), fast=fast).params["wte"])
        assert isinstance(wte.base, np.memmap) or isinstance(wte, np.memmap), type(wte.base)
        assert not wte.flags.writeable


def test_the_model_folder_imports_nothing_but_numpy_and_itself():
    # minineo/model is the textbook: no files, Hub, threads or commands reach into it
    import ast
    from pathlib import Path
    # errors: MinineoError, the one shape of a user mistake; dataclasses and difflib: no I/O, no threads
    allowed = {"numpy", "math", "errors", "dataclasses", "difflib"}
    for path in (Path(minineo.__file__).parent / "model").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level in (0, 2) else []   # level 1: a sibling in model/
            else:
                continue
            assert all(name.split(".")[0] in allowed for name in names), f"{path.name} imports {names}"


def test_the_cache_records_what_the_model_fed_it(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint(window_size=6))
    cache = model.new_cache(2)
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    model(random_ids((2, 5)), attention_mask=mask, cache=cache)
    model(random_ids((2, 1), seed=1), cache=cache)
    assert cache.length == 6 and cache.batch_size == 2
    np.testing.assert_array_equal(cache.real, np.concatenate([mask, np.ones((2, 1), int)], axis=1) == 1)
    for kind, layer in zip(model.config.attention_layers, cache.layers):
        assert layer.n == 6, f"a {kind} layer saw {layer.n} tokens, not 6"


def test_a_mistake_leaves_the_cache_as_it_was(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint())
    cache = model.new_cache(1)
    model(random_ids((1, 60)), cache=cache)
    with pytest.raises(MinineoError, match="longer than"):
        model(random_ids((1, 5)), cache=cache)
    assert cache.length == 60 and [layer.n for layer in cache.layers] == [60] * 4
    model(random_ids((1, 4)), cache=cache)   # and it goes on from there
    assert cache.length == 64


@pytest.mark.parametrize("window, feeds", [(1, [3, 1, 1, 4]), (4, [1] * 12), (4, [9, 1, 2, 7]), (5, [20])])
def test_local_cache_invariants(window, feeds):
    # After every update: keys in view are the last ones, in order, each with its own value, at most
    # window - 1 earlier keys plus the new ones, and the buffer keeps its 2 x window rows.
    from minineo.model.cache import LocalCache
    cache, n = LocalCache(window), 0
    for T in feeds:
        k = np.arange(n, n + T, dtype=np.float32)[None, None, :, None] * np.ones((1, 2, 1, 3), np.float32)
        keys, values, k_idx = cache.update(k, -k)
        n += T
        first = max(0, n - T - (window - 1))
        np.testing.assert_array_equal(k_idx, np.arange(first, n), err_msg=f"after {n} tokens")
        np.testing.assert_array_equal(keys[0, 0, :, 0], k_idx, err_msg=f"keys after {n} tokens")
        np.testing.assert_array_equal(values[0, 1, :, 2], -k_idx, err_msg=f"values after {n} tokens")
        assert cache.k.shape[2] == 2 * window, f"buffer of {cache.k.shape[2]} rows"


def test_cache_invariants_are_checked():
    from minineo.model.cache import checked
    keys = np.zeros((1, 1, 3, 2), np.float32)
    checked(keys, keys, np.arange(4, 7), rows=8, limit=8)
    for bad in [dict(k_idx=np.array([4, 6, 5])), dict(k_idx=np.arange(2)), dict(rows=9)]:
        args = dict(k_idx=np.arange(4, 7), rows=8) | bad
        with pytest.raises(AssertionError):
            checked(keys, keys, args["k_idx"], rows=args["rows"], limit=8)
