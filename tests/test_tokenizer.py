import shutil

import pytest

import minineo
from minineo.errors import MinineoError
from minineo.weights.tokenizer import GPT2_BPE, Tokenizer

TEXTS = ["Hello world", " leading space, punctuation!?", "naïve café — 日本語 🙂", "a<|endoftext|>b", ""]


@pytest.fixture(scope="module")
def bpe():
    return Tokenizer.from_dir(GPT2_BPE)


def test_known_ids(bpe):
    assert bpe.encode("Hello world") == [15496, 995]
    assert bpe.encode("<|endoftext|>") == [50256] and bpe.eos_token_id == 50256
    assert bpe.vocab_size == 50257


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_and_bytes(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert bpe.token_bytes(ids) == text.encode()


def test_tokenizer_json_gives_the_same_ids(bpe, tmp_path):
    bpe.backend.save(str(tmp_path / "tokenizer.json"))
    from_json = Tokenizer.from_dir(tmp_path)
    for text in TEXTS:
        assert from_json.encode(text) == bpe.encode(text), text


def test_vocab_and_merges_directory_and_fallback(tmp_path):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_BPE / name, tmp_path / name)
    assert Tokenizer.from_dir(tmp_path).encode("Hello world") == [15496, 995]
    assert Tokenizer.from_dir(tmp_path / "empty").encode("Hello world") == [15496, 995]   # shipped GPT-2 BPE


def test_matches_transformers_gpt2_tokenizer(bpe):
    transformers = pytest.importorskip("transformers")
    theirs = transformers.GPT2TokenizerFast(vocab=str(GPT2_BPE / "vocab.json"), merges=str(GPT2_BPE / "merges.txt"))
    for text in TEXTS:
        assert bpe.encode(text) == theirs.encode(text), text


@pytest.mark.parametrize("name, content", [("tokenizer.json", b"{not json"), ("vocab.json", b"[1, 2]")])
def test_corrupt_tokenizer_files_are_one_line_errors(numpy_checkpoint, name, content):
    directory = numpy_checkpoint()
    (directory / name).write_bytes(content)
    (directory / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(MinineoError, match=rf"{name}: not a readable tokenizer file \(") as error:
        minineo.load(directory)
    assert "\n" not in str(error.value)


def test_a_tokenizer_larger_than_the_model_is_refused(numpy_checkpoint):
    directory = numpy_checkpoint()   # vocab_size 300
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_BPE / name, directory)
    with pytest.raises(MinineoError, match=r"merges.txt has 50257 tokens, but .*config.json has vocab_size 300"):
        minineo.load(directory)
