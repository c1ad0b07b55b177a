"""The bundled model is what its model card says: a real GPT-Neo (both attention kinds, a window shorter
than the context) small enough to ship, that writes words, not runs of blank lines."""
import re

import numpy as np

import minineo
from minineo.text.sliding_window import score_tokens, token_nll
from minineo.weights.hub import BUNDLED

from conftest import load_script

# The model card's measurements (prompts, seeds, the held-out play) are scripts/measure_bundled.py's.
measure_bundled = load_script("measure_bundled")
PROMPTS, HELDOUT = measure_bundled.PROMPTS, measure_bundled.HELDOUT
# Blank lines: issue #10 asks for at most 25%; this model gives 34.1% (v0.3.0: 33.9%), so the bound only
# catches a model that prints mostly blank lines (v0.1: 54%). Words: the goal is 40, this model 42.3.
# Nats per character on the slice below: this model 1.478; v0.3.0 gives 1.579 here, v0.2.0 1.683.
MAX_BLANK, MIN_WORDS = 0.40, 36
MAX_NATS_PER_CHARACTER = 1.52
# Two invented speakers taking turns: the mean loss of their names' tokens after the first, once both have
# spoken. This model: 3.3 nats; v0.3.0, which had learnt its training plays' casts instead, 11.3.
MAX_COPIED_NAME_NATS = 5.0


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
    # The CLI's defaults on the model card's prompts and seeds: the share of the lines that begin in the
    # generated text that are blank, and the words per 80 tokens.
    blank_share, words = measure_bundled.sampling_statistics(measure_bundled.sample_prompts(minineo.load()))
    print(f"{blank_share:.1%} blank lines, {words:.1f} words per 80 tokens")
    assert blank_share <= MAX_BLANK and words >= MIN_WORDS, (
        f"{blank_share:.1%} blank lines (at most {MAX_BLANK:.0%}), "
        f"{words:.1f} words per 80 tokens (at least {MIN_WORDS})")


def test_heldout_nats_per_character():
    # The first 20,000 characters of the held-out play, in windows of 256 tokens every 128: a quick
    # stand-in for the model card's full measurement (stride 64), which no tokenizer change can flatter.
    model = minineo.load()
    text = HELDOUT.read_text(encoding="utf-8")[:20000]
    score = score_tokens(model, model.tokenizer.encode(text), context=256, stride=128)
    print(f"{score.nll / len(text):.4f} nats per character, perplexity {score.perplexity:.2f}")
    assert score.nll / len(text) <= MAX_NATS_PER_CHARACTER, f"{score.nll / len(text):.4f} nats per character"


def test_copies_a_name_it_never_saw_from_its_context():
    model = minineo.load()
    names = ["VORTIGAN", "BRELIS"]
    speeches = ["I pray you, sir, what news?", "The king is come to town.", "Then let us go and meet him.",
                "Not I, my lord; I stay.", "Why, then, farewell.", "Farewell, good friend.", "Stay yet a while.",
                "I cannot, sir.", "Then go thy ways.", "I will."]
    ids = model.tokenizer.encode("".join(f"{names[i % 2]}.\n{line}\n\n" for i, line in enumerate(speeches)))
    nll = token_nll(model(np.array(ids[:-1])), np.array(ids[1:]))   # nll[k] is the loss of ids[k + 1]
    name_ids = [model.tokenizer.encode(name) for name in names]
    headings = [(k, len(name)) for k in range(len(ids)) for name in name_ids if ids[k:k + len(name)] == name]
    assert len(headings) == len(speeches), headings
    copied = [nll[k + j - 1] for k, length in headings[2:] for j in range(1, length)]
    print(f"{np.mean(copied):.2f} nats per copied name token ({len(copied)} tokens)")
    assert np.mean(copied) <= MAX_COPIED_NAME_NATS, f"{np.mean(copied):.2f} nats per copied name token"


def test_line_ends_counts_what_the_model_card_says():
    # measure_bundled's count behind the model card's "short sentences, short speeches": a play's speech lines by
    # how they end, how often each kind ends the speech, and speech lines per heading. The last line may be cut off.
    play = ("ROMEO.\nBut soft, what light\nthrough yonder window breaks?\n\n[Enter Juliet.]\n\n"
            "JULIET.\nAy me.\nO Romeo,\n\nROMEO.\nShe speaks")
    ends, per_heading = measure_bundled.line_ends([play])
    print(ends, per_heading)
    assert ends == {"sentence": (2 / 4, 1 / 2), "word": (1 / 4, 0.0)} and per_heading == 4 / 3, (ends, per_heading)
