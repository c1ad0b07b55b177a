"""minineo.generate and minineo.pipeline: greedy tokens identical to transformers' generate, and the
promises a user relies on (seeds, EOS and length limits, streaming, the pipeline's output).

Token comparisons print the first differing new token and both sequences.
"""
import dataclasses

import pytest

import minineo
from minineo.errors import MinineoError
from minineo.text.generation import batch_prompts, cut_after_eos, generate_ids, generate_steps, stream_text
from conftest import hf_model, text_checkpoint

EOS = 299   # the tiny configs' eos_token_id, inside their 300-token vocabulary
# 11, 2 and 6 tokens: with window 4 and 20 new tokens, every local layer's ring buffer wraps many times
PROMPTS = [[5, 17, 33, 2, 90, 8, 41, 7, 7, 100, 12], [250, 3], [7, 7, 100, 42, 42, 9]]


def assert_same_tokens(ours, theirs, what):
    for row, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise AssertionError(f"{what}: row {row} differs first at new token {first}\n"
                                 f"  minineo:      {a}\n  transformers: {b}")
    assert len(ours) == len(theirs), f"{what}: {len(ours)} rows, transformers {len(theirs)}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """transformers' model, saved for minineo to load. Weights spread wider than GPT-Neo's 0.02
    so that greedy wanders over the vocabulary instead of repeating one token."""
    directory = tmp_path_factory.mktemp("reference")
    return hf_model(directory, seed=3, window_size=4, initializer_range=0.3), directory


@pytest.fixture
def pair(reference):   # a fresh minineo model per test: some change its eos_token_id
    ref, directory = reference
    return ref, minineo.load(directory)


def hf_generate(ref, prompts, eos=EOS, **settings):  # -> new tokens of each row, cut after EOS as ours
    torch = pytest.importorskip("torch")
    ids, mask = batch_prompts(prompts, eos)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a tiny model's steps are all overhead; threads only slow them down
    try:
        with torch.no_grad():
            out = ref.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                               pad_token_id=eos, eos_token_id=eos, **settings)
    finally:
        torch.set_num_threads(threads)
    return [cut_after_eos(row, eos) for row in out[:, ids.shape[1]:].numpy()]


def with_eos(model, eos):  # the same weights, another end-of-text token
    model.config = dataclasses.replace(model.config, eos_token_id=eos)
    return model


# --- greedy against transformers ----------------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS[:2], ids=["11 tokens", "2 tokens"])
def test_greedy_matches_transformers(pair, prompt):
    ref, model = pair
    ours = generate_ids(model, prompt, max_new_tokens=20)
    assert_same_tokens([ours], hf_generate(ref, [prompt], max_new_tokens=20), "one prompt")
    assert len(set(ours)) > 5, f"greedy repeats itself, the test shows little: {ours}"


def test_greedy_left_padded_batch_matches_transformers(pair):
    ref, model = pair
    ours = generate_ids(model, PROMPTS, max_new_tokens=20)
    assert_same_tokens(ours, hf_generate(ref, PROMPTS, max_new_tokens=20), "left-padded batch")


@pytest.mark.parametrize("settings", [{}, dict(min_new_tokens=8), dict(repetition_penalty=1.3),
                                      dict(min_length=11 + 8, max_length=11 + 16)],   # counted with the prompt
                         ids=["plain", "min_new_tokens", "repetition_penalty", "min_length, max_length"])
def test_eos_and_processors_match_transformers(pair, settings):
    ref, model = pair
    # make EOS the token that greedy picks as row 1's 3rd new token: the row must stop there
    eos = generate_ids(model, PROMPTS[1], max_new_tokens=3)[2]
    with_eos(model, eos)
    stopped = generate_ids(model, PROMPTS[1], max_new_tokens=20)
    assert stopped[-1] == eos and len(stopped) <= 3, f"did not stop at EOS {eos}: {stopped}"
    settings = {**({} if "max_length" in settings else dict(max_new_tokens=20)), **settings}
    ours = generate_ids(model, PROMPTS, **settings)
    assert_same_tokens(ours, hf_generate(ref, PROMPTS, eos, **settings), f"EOS {eos}, {settings}")


def test_generation_stops_when_every_row_has_finished(pair):
    ref, model = pair
    eos = generate_ids(model, PROMPTS[1], max_new_tokens=3)[2]
    with_eos(model, eos)
    ours = generate_ids(model, [PROMPTS[1], PROMPTS[1]], max_new_tokens=20)
    assert_same_tokens(ours, hf_generate(ref, [PROMPTS[1]] * 2, eos, max_new_tokens=20), "both rows stop")
    steps = list(generate_steps(model, *batch_prompts([PROMPTS[1]] * 2, eos), max_new_tokens=20))
    assert len(steps) <= 3, f"{len(steps)} steps after both rows produced EOS {eos}"


# --- sampling, limits and prompts (NumPy only) ------------------------------------------------------


@pytest.fixture
def model(numpy_checkpoint):
    return minineo.load(numpy_checkpoint(window_size=4))


def test_only_the_last_position_is_scored(model):
    shapes, logits = [], model.logits
    model.logits = lambda h: shapes.append(h.shape) or logits(h)
    generate_ids(model, PROMPTS, max_new_tokens=4)
    assert shapes == [(3, model.config.hidden_size)] * 4, f"LM head inputs: {shapes}"


@pytest.mark.parametrize("seed", [0, 1])
def test_top_k_1_sampling_equals_greedy(model, seed):
    sampled = generate_ids(model, PROMPTS, max_new_tokens=20, do_sample=True, top_k=1, seed=seed)
    assert_same_tokens(sampled, generate_ids(model, PROMPTS, max_new_tokens=20), "top_k=1 vs greedy")


def test_seed_reproduces_and_fresh_randomness_differs(model):
    def run(seed):
        return generate_ids(model, PROMPTS, max_new_tokens=20, do_sample=True, seed=seed)
    assert run(0) == run(0)
    assert run(0) != run(1)
    assert run(None) != run(None)


def test_min_new_tokens_and_min_length_suppress_eos(model):
    prompt = PROMPTS[2]
    eos = generate_ids(model, prompt, max_new_tokens=1)[0]
    with_eos(model, eos)   # greedy's very first choice is now EOS
    assert generate_ids(model, prompt, max_new_tokens=10) == [eos]
    held = generate_ids(model, prompt, max_new_tokens=10, min_new_tokens=5)
    assert eos not in held[:5] and len(held) > 5, held
    assert generate_ids(model, prompt, max_new_tokens=10, min_length=len(prompt) + 5) == held


def test_max_length_counts_the_prompt(model):
    assert len(generate_ids(model, PROMPTS[0], max_length=len(PROMPTS[0]) + 7)) == 7
    with pytest.raises(MinineoError, match="max_length 5 is shorter than the prompt's 11 tokens"):
        generate_ids(model, PROMPTS[0], max_length=5)


def test_too_long_says_by_how_much_and_truncate_keeps_the_end(model):
    prompt = list(range(40))   # the tiny model's context is 64: 40 + 30 is 6 too many
    with pytest.raises(MinineoError, match="is 6 tokens longer than the model's context of 64"):
        generate_ids(model, prompt, max_new_tokens=30)
    assert (generate_ids(model, prompt, max_new_tokens=30, truncate=True)
            == generate_ids(model, prompt[-34:], max_new_tokens=30))
    with pytest.raises(MinineoError, match="leave no room for a prompt"):
        generate_ids(model, prompt, max_new_tokens=64, truncate=True)


def test_empty_prompt_starts_from_end_of_text(model):
    assert generate_ids(model, [], max_new_tokens=8) == generate_ids(model, [EOS], max_new_tokens=8)
    assert generate_ids(model, [PROMPTS[0], []], max_new_tokens=8)[1] == generate_ids(model, [EOS], max_new_tokens=8)
    assert generate_ids(model, PROMPTS[0], max_new_tokens=0) == []


@pytest.mark.parametrize("settings, message", [
    (dict(do_sample=True, temperature=0), "use do_sample=False"),
    (dict(top_p=0), "top_p must be in"),
    (dict(max_new_tokens=-1), "max_new_tokens must be an integer >= 0"),
    (dict(seed=1.5), "seed must be an integer"),
])
def test_bad_settings_are_clear_errors(model, settings, message):
    with pytest.raises(MinineoError, match=message):
        generate_ids(model, PROMPTS[0], **settings)


# --- text in, text out ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return text_checkpoint(tmp_path_factory.mktemp("text"))


@pytest.fixture
def text_model(text_dir):
    return minineo.load(text_dir)


def test_streamed_pieces_join_to_the_returned_text(text_model):
    settings = dict(max_new_tokens=24, do_sample=True, seed=0)
    pieces = []
    text = minineo.generate(text_model, "Once upon a time", stream=pieces.append, **settings)
    assert len(pieces) > 5 and "".join(pieces) == text
    assert list(stream_text(text_model, "Once upon a time", **settings)) == pieces
    ids = generate_ids(text_model, text_model.tokenizer.encode("Once upon a time"), **settings)
    assert text == text_model.tokenizer.decode([i for i in ids if i != text_model.config.eos_token_id])


def test_a_list_of_prompts_gives_the_texts_of_each_alone(text_model):
    prompts = ["Once upon a time", "Hi", ""]
    texts = minineo.generate(text_model, prompts, max_new_tokens=12)
    assert texts == [minineo.generate(text_model, p, max_new_tokens=12) for p in prompts]
    assert all(isinstance(t, str) and t for t in texts), texts
    with pytest.raises(MinineoError, match="one prompt"):
        minineo.generate(text_model, prompts, stream=print)


def test_text_stops_at_end_of_text(text_model):
    eos = generate_ids(text_model, text_model.tokenizer.encode("Hi"), max_new_tokens=1)[0]
    with_eos(text_model, eos)
    assert minineo.generate(text_model, "Hi") == ""
    assert minineo.generate(text_model, "Hi", min_new_tokens=3, max_new_tokens=3) != ""


# --- pipeline ------------------------------------------------------------------------------------


def test_pipeline_returns_transformers_shapes_with_the_prompt(text_dir):
    generator = minineo.pipeline("text-generation", model=str(text_dir))
    out = generator("EleutherAI has", do_sample=True, min_length=10, max_new_tokens=12, seed=0)
    assert isinstance(out, list) and len(out) == 1 and list(out[0]) == ["generated_text"], out
    assert out[0]["generated_text"].startswith("EleutherAI has")
    assert len(out[0]["generated_text"]) > len("EleutherAI has")
    batch = generator(["EleutherAI has", "Hi"], num_return_sequences=2, max_new_tokens=4)
    assert [len(row) for row in batch] == [2, 2] and batch[1][0]["generated_text"].startswith("Hi"), batch


def test_pipeline_settings_mean_what_they_mean_in_transformers(text_model):
    generator = minineo.pipeline("text-generation", model=text_model)
    prompt = "EleutherAI has"
    T = len(text_model.tokenizer.encode(prompt))
    # its defaults: sampling at temperature 0.7, as transformers' text-generation pipeline
    assert (generator(prompt, max_new_tokens=8, seed=0, return_full_text=False)[0]["generated_text"]
            == minineo.generate(text_model, prompt, max_new_tokens=8, do_sample=True, temperature=0.7, seed=0))
    # max_length and min_length count the prompt's tokens
    assert (generator(prompt, max_length=T + 3, do_sample=False)[0]["generated_text"]
            == prompt + minineo.generate(text_model, prompt, max_new_tokens=3))
    with_eos(text_model, generate_ids(text_model, text_model.tokenizer.encode(prompt), max_new_tokens=1)[0])
    held = generator(prompt, min_length=T + 4, max_new_tokens=6, do_sample=False, return_full_text=False)
    assert held[0]["generated_text"] == minineo.generate(text_model, prompt, min_new_tokens=4, max_new_tokens=6) != ""


def test_pipeline_unknown_task():
    with pytest.raises(MinineoError, match="unknown task 'summarization'"):
        minineo.pipeline("summarization")
