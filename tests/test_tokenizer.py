import json
import re
import shutil

import pytest

import minineo
from minineo.errors import MinineoError
from minineo.weights.tokenizer import GPT2_BPE, Tokenizer, bytes_to_unicode

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


# --- another tokenizer's vocabulary: refused at load, naming the file and what it lacks (issue 31) ------

def bytes_vocab_model(numpy_checkpoint, vocab, merges="#version: 0.2\n"):
    directory = numpy_checkpoint()   # vocab_size 300
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text(merges, encoding="utf-8")
    return directory


def test_a_vocabulary_without_the_byte_alphabet_is_one_line_at_load(numpy_checkpoint, capsys):
    """A character-level vocabulary (not GPT-2's bytes): it used to load, then fail at the first token it
    generated with `TypeError: 'NoneType' object is not iterable`."""
    directory = bytes_vocab_model(numpy_checkpoint, {"a": 0, "b": 1, "<|endoftext|>": 2, "ab": 3}, "#version: 0.2\na b\n")
    expected = (f"{directory / 'vocab.json'}: not GPT-2's byte-level vocabulary: 254 of the 256 byte characters are "
                "not tokens ('Ā' for byte 0x00, 'ā' for byte 0x01, 'Ă' for byte 0x02, ...); every GPT-Neo tokenizer has all 256")
    with pytest.raises(MinineoError) as error:
        minineo.load(directory)
    assert str(error.value) == expected
    from minineo.commands.generate import main
    assert main(["-m", str(directory), "-n", "5", "ab"]) == 1
    err = capsys.readouterr().err
    assert err == f"minineo: error: {expected}\n", err


def test_a_token_outside_the_byte_alphabet_names_it(numpy_checkpoint):
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())} | {"<|endoftext|>": 256, "日本": 257}
    directory = bytes_vocab_model(numpy_checkpoint, vocab)
    with pytest.raises(MinineoError, match=rf"^{re.escape(str(directory / 'vocab.json'))}: not GPT-2's byte-level "
                                           r"vocabulary: the token '日本' has '日', which is not one of the 256 byte"):
        minineo.load(directory)
    tokenizer_json = Tokenizer.from_dir(GPT2_BPE).backend
    tokenizer_json.add_tokens(["<pad>"])   # an added token is not spelt in bytes, and needs not be
    tokenizer_json.save(str(directory / "tokenizer.json"))
    assert Tokenizer.from_dir(directory).encode("Hi<pad>") == [17250, 50257]


def test_the_whole_byte_alphabet_loads_and_round_trips(numpy_checkpoint):
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())} | {"<|endoftext|>": 256}
    model = minineo.load(bytes_vocab_model(numpy_checkpoint, vocab))   # bytes only, no merges: still GPT-2's kind
    text = "naïve café — 日本語 🙂"
    assert model.tokenizer.decode(model.tokenizer.encode(text)) == text and len(model.tokenizer.encode(text)) == len(text.encode())


def test_an_id_past_the_tokenizer_spells_nothing(bpe):
    """A model whose embedding has rows the tokenizer has no token for (50304 instead of 50257) can
    generate such an id: it decodes to nothing, as in decode() and transformers, and streams without error."""
    from minineo.text.generation import detokenize
    assert bpe.decode([15496, 50300, 995]) == "Hello world" and bpe.token_bytes([15496, 50300, 995]) == b"Hello world"
    assert "".join(detokenize([15496, 50300, 995], bpe, eos_token_id=50256)) == "Hello world"
