"""The bundled model is what its model card says: a real GPT-Neo (both attention kinds, a window shorter
than the context) small enough to ship, that writes words, not runs of blank lines."""
import re

import minineo
from minineo.weights.hub import BUNDLED

PROMPTS = ["ROMEO.\nBut soft,", "KING HENRY.\nNow,", "HAMLET.\nWhat is"]


def test_shape_and_size():
    config = minineo.load().config
    assert set(config.attention_layers) == {"global", "local"}, config.attention_layers
    assert config.window_size < config.max_position_embeddings and config.max_position_embeddings >= 256
    size = (BUNDLED / "model.safetensors").stat().st_size
    assert size <= 40e6, f"the bundled model's weights are {size / 1e6:.1f} MB, more than 40 MB"


def test_greedy_decoding_writes_words_not_blank_lines():
    model = minineo.load()
    for prompt in PROMPTS:
        text = minineo.generate(model, prompt, max_new_tokens=40)
        words = re.findall(r"[A-Za-z]{2,}", text)
        blank_run = max(len(run) for run in re.findall(r"\n*", text))
        print(f"{prompt!r} -> {text!r}")
        assert len(words) >= 8 and blank_run <= 3, f"{prompt!r} -> {text!r}"
