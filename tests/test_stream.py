"""minineo.stream: streamed pieces never hold broken UTF-8 and join to the full decode."""

import json
from pathlib import Path

import pytest

from conftest import bytes_to_unicode
from minineo.text.stream import StreamDetokenizer

BPE_DIR = Path(__file__).resolve().parent.parent / "minineo" / "data" / "gpt2-bpe"
# 4-byte emoji (one with zero-width joiners), 3-byte CJK and kana, 2-byte Latin accents
TEXT = "Hi 👋 world! 日本語のテキスト 🤖🎉 naïve café — 中文字符 👨\u200d👩\u200d👧 end"


class VocabTokenizer:
    """token_bytes() built from vocab.json, as the real tokenizer module provides it."""

    def __init__(self):
        self.vocab = json.loads((BPE_DIR / "vocab.json").read_text(encoding="utf-8"))
        self.byte_encoder = bytes_to_unicode()
        byte_decoder = {char: byte for byte, char in self.byte_encoder.items()}
        self.token_to_bytes = {i: bytes(byte_decoder[c] for c in token) for token, i in self.vocab.items()}

    def token_bytes(self, ids):
        return b"".join(self.token_to_bytes[i] for i in ids)

    def encode_per_byte(self, text):
        # one token per byte: every multi-byte character is split
        return [self.vocab[self.byte_encoder[b]] for b in text.encode("utf-8")]

    def encode_longest_match(self, text):
        # greedy longest vocabulary match: valid GPT-2 ids whose boundaries fall inside characters
        chars = "".join(self.byte_encoder[b] for b in text.encode("utf-8"))
        longest = max(map(len, self.vocab))
        ids, start = [], 0
        while start < len(chars):
            end = next(e for e in range(min(len(chars), start + longest), start, -1) if chars[start:e] in self.vocab)
            ids.append(self.vocab[chars[start:end]])
            start = end
        return ids


@pytest.fixture(scope="module")
def tokenizer():
    return VocabTokenizer()


def stream(tokenizer, ids):
    detokenizer = StreamDetokenizer(tokenizer)
    return [detokenizer.feed(i) for i in ids] + [detokenizer.flush()]


def check_stream(tokenizer, ids):
    pieces = stream(tokenizer, ids)
    full = tokenizer.token_bytes(ids).decode("utf-8", errors="replace")
    joined = "".join(pieces)
    if joined != full:
        first = next((i for i, (a, b) in enumerate(zip(joined, full)) if a != b), min(len(joined), len(full)))
        raise AssertionError(f"streamed text differs from full decode at char {first}: {joined[first:first + 10]!r} vs {full[first:first + 10]!r}")
    broken = [(i, piece) for i, piece in enumerate(pieces) if "\ufffd" in piece]
    assert not broken, f"pieces with U+FFFD (index, piece): {broken[:5]}"
    return pieces


def split_characters(tokenizer, ids):
    # byte offsets of token boundaries that fall inside a character
    data, ends, total = tokenizer.token_bytes(ids), [], 0
    for i in ids:
        total += len(tokenizer.token_bytes([i]))
        try:
            data[:total].decode("utf-8")
        except UnicodeDecodeError:
            ends.append(total)
    return ends


@pytest.mark.parametrize("encode", ["encode_per_byte", "encode_longest_match"])
def test_stream_holds_back_split_characters(tokenizer, encode):
    ids = getattr(tokenizer, encode)(TEXT)
    pieces = check_stream(tokenizer, ids)
    assert "".join(pieces) == TEXT
    assert split_characters(tokenizer, ids), f"{encode} split no character, so nothing was held back: {ids}"
    assert "" in pieces[:-1], "no token was held back"


def test_stream_with_real_gpt2_bpe(tokenizer):
    tokenizers = pytest.importorskip("tokenizers")
    bpe = tokenizers.ByteLevelBPETokenizer(str(BPE_DIR / "vocab.json"), str(BPE_DIR / "merges.txt"))
    ids = bpe.encode(TEXT).ids
    assert split_characters(tokenizer, ids), f"GPT-2 BPE split no character of the test text: {ids}"
    assert "".join(check_stream(tokenizer, ids)) == TEXT


def test_invalid_and_truncated_bytes_match_full_decode(tokenizer):
    # a stray continuation byte, then an emoji cut off after two of its four bytes
    ids = tokenizer.encode_per_byte("ok ") + [tokenizer.vocab[tokenizer.byte_encoder[0x80]]]
    ids += tokenizer.encode_per_byte("x 🤖")[:-2]
    pieces = stream(tokenizer, ids)
    assert "".join(pieces) == tokenizer.token_bytes(ids).decode("utf-8", errors="replace") == "ok \ufffdx \ufffd"
    assert pieces[-1] == "\ufffd", f"flush should report the cut-off emoji, got {pieces[-1]!r}"


def test_flush_resets_for_the_next_sequence(tokenizer):
    detokenizer = StreamDetokenizer(tokenizer)
    for i in tokenizer.encode_per_byte("日")[:2]:
        detokenizer.feed(i)
    assert detokenizer.flush() == "\ufffd"
    assert "".join(detokenizer.feed(i) for i in tokenizer.encode_per_byte("本")) == "本"
    assert detokenizer.flush() == ""
