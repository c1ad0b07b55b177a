"""minineo's logits against transformers' GPTNeoForCausalLM on the same random-weight checkpoints."""
import json

import numpy as np
import pytest

import minineo
from minineo.weights.safetensors_io import SafetensorsFile
from conftest import assert_close, hf_logits, hf_model, random_ids, rewrite_tensors

torch = pytest.importorskip("torch")

CONFIGS = {
    "global-local, window < T": {},
    "local first": dict(attention_types=[[["local", "global"], 2]]),
    "all local": dict(attention_types=[[["local"], 4]]),
    "all global": dict(attention_types=[[["global"], 4]]),
    "three-layer pattern": dict(num_layers=6, attention_types=[[["global", "local", "local"], 2]]),
    "odd heads": dict(hidden_size=35, num_heads=7, attention_types=[[["global", "local", "global"], 1]],
                      num_layers=3),
    "intermediate_size set": dict(intermediate_size=37),
    "layer_norm_epsilon": dict(layer_norm_epsilon=1e-2),
    "window 1": dict(window_size=1),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match(tmp_path, name):
    ref = hf_model(tmp_path, **CONFIGS[name])
    ids = random_ids((2, 23))
    assert_close(minineo.load(tmp_path)(ids), hf_logits(ref, ids), name)


def test_sequence_at_max_positions(tmp_path):
    ref = hf_model(tmp_path, max_position_embeddings=32, window_size=7)
    ids = random_ids(32)
    assert_close(minineo.load(tmp_path)(ids), hf_logits(ref, ids[None])[0], "T = max_position_embeddings")


@pytest.mark.parametrize("T", [6, 19])   # inside and beyond the window: pads occupy window slots
def test_left_padded_batch(tmp_path, T):
    ref = hf_model(tmp_path)
    ids = random_ids((3, T))
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :T - 2] = 0
    positions = np.where(mask == 1, np.cumsum(mask, 1) - 1, 1)   # what transformers' generate passes
    ours = minineo.load(tmp_path)(ids, attention_mask=mask)
    assert_close(ours, hf_logits(ref, ids, mask, positions), f"left-padded, T={T}", where=mask == 1)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_files(tmp_path, dtype):
    hf_model(seed=1).to(getattr(torch, dtype)).save_pretrained(tmp_path)
    assert SafetensorsFile(tmp_path / "model.safetensors").dtype("transformer.wte.weight") == (
        "F16" if dtype == "float16" else "BF16")
    import transformers
    ref = transformers.GPTNeoForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = random_ids((1, 20))
    ours = minineo.load(tmp_path)(ids)
    assert ours.dtype == np.float32
    assert_close(ours, hf_logits(ref, ids), f"{dtype} checkpoint")


def test_sharded_checkpoint(tmp_path):
    ref = hf_model()
    ref.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 2
    ids = random_ids((2, 12))
    assert_close(minineo.load(tmp_path)(ids), hf_logits(ref, ids), "sharded checkpoint")


def test_old_mask_buffers_and_lm_head_are_accepted(tmp_path, capsys):
    ref = hf_model(tmp_path)
    P = ref.config.max_position_embeddings
    old = {}
    for i in range(ref.config.num_layers):
        old[f"transformer.h.{i}.attn.attention.bias"] = np.tril(np.ones((1, 1, P, P), np.uint8))
        old[f"transformer.h.{i}.attn.attention.masked_bias"] = np.array(-1e9, np.float32)
    old["lm_head.weight"] = ref.transformer.wte.weight.detach().numpy()
    rewrite_tensors(tmp_path, lambda tensors: tensors | old)
    ids = random_ids((1, 15))
    assert_close(minineo.load(tmp_path)(ids), hf_logits(ref, ids), "file with old buffers")
    assert "ignoring" not in capsys.readouterr().err   # known buffers are skipped silently


def test_hidden_states_match(tmp_path):
    ref = hf_model(tmp_path)
    ids = random_ids((1, 11))
    with torch.no_grad():
        theirs = ref(torch.tensor(ids), output_hidden_states=True).hidden_states
    ours = []
    final = minineo.load(tmp_path).forward(ids, hidden_states=ours)
    assert len(ours) == len(theirs) == ref.config.num_layers + 1
    for layer, (a, b) in enumerate(zip(ours[:-1], theirs[:-1])):
        assert_close(a, b.numpy(), f"hidden state {layer}")
    assert_close(final, theirs[-1].numpy(), "final hidden state (after ln_f)")


def test_incremental_matches_transformers(tmp_path):
    ref = hf_model(tmp_path, window_size=4)
    ids = random_ids((2, 30))
    model = minineo.load(tmp_path)
    cache = model.new_cache(2)
    pieces = [model(ids[:, :9], cache=cache)] + [model(ids[:, t:t + 1], cache=cache) for t in range(9, 30)]
    assert_close(np.concatenate(pieces, axis=1), hf_logits(ref, ids), "cached decoding vs transformers")


def test_config_json_from_hub_layout_with_null_intermediate(tmp_path):
    hf_model(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["intermediate_size"] is None   # as in every released model
    assert minineo.load(tmp_path).config.intermediate_size == 4 * raw["hidden_size"]
