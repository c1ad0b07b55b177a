"""GPT-2's byte-level BPE, as GPT-Neo uses it, on top of the `tokenizers` library.

A model directory carries either tokenizer.json (125m) or vocab.json + merges.txt (1.3B, 2.7B);
a directory with neither falls back to the GPT-2 vocabulary shipped in minineo/data/gpt2-bpe.
"""
import re
import sys
from functools import lru_cache
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from ..errors import MinineoError
from .files import open_regular_file

EOS = "<|endoftext|>"
GPT2_BPE = Path(__file__).parent.parent / "data" / "gpt2-bpe"


@lru_cache(maxsize=1)
def bytes_to_unicode():
    """GPT-2's table from each byte to a printable character; BPE tokens are strings of these."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:   # unprintable bytes move to code points past 255, in order
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


class Tokenizer:
    def __init__(self, backend, directory=None, files="the tokenizer"):
        self.backend = backend
        self.directory = directory   # where its files came from: the model's own, or GPT-2's fallback
        self.files = files           # its file(s), as errors name them
        self.eos_token_id = backend.token_to_id(EOS)
        if self.eos_token_id is None:
            raise MinineoError(f"{files}: the tokenizer has no {EOS} token")
        self._byte_of = {char: byte for byte, char in bytes_to_unicode().items()}

    @classmethod
    def from_dir(cls, directory):
        directory = Path(directory)
        if (directory / "tokenizer.json").exists():
            path = directory / "tokenizer.json"
            backend = _read(path, tokenizers.Tokenizer.from_file, f"{path}: its merges make")
            check_byte_alphabet(backend, path)
            return cls(backend, directory, str(path))
        if not (directory / "vocab.json").exists():
            print(f"minineo: {directory}: no tokenizer files (tokenizer.json, or vocab.json + merges.txt); "
                  "using GPT-2's vocabulary, which every GPT-Neo shares", file=sys.stderr)
            directory = GPT2_BPE
        vocab, merges = directory / "vocab.json", directory / "merges.txt"
        if not merges.exists():
            raise MinineoError(f"{directory}: has vocab.json but no merges.txt")
        backend = tokenizers.Tokenizer(_read(vocab, lambda _: models.BPE.from_file(str(vocab), str(merges)),
                                             f"{merges}: its merges make"))
        check_byte_alphabet(backend, vocab)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens([EOS])
        return cls(backend, directory, f"{vocab} + {merges.name}")

    @property
    def vocab_size(self):  # the largest id + 1: the rows of an embedding that every token id indexes
        return max(self.backend.get_vocab(with_added_tokens=True).values()) + 1

    def encode(self, text):  # str -> list[int]
        if not isinstance(text, str):
            raise MinineoError(f"text must be a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:   # a lone surrogate: not a character any text can hold
            raise MinineoError(f"text is not valid Unicode: a lone surrogate {text[e.start]!r} at index {e.start}") from None
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids):  # list[int] -> str; bytes that are not valid UTF-8 become U+FFFD
        return self.backend.decode(list(map(int, ids)), skip_special_tokens=False)

    def tokens(self, ids):  # list[int] -> list[str], each in GPT-2's byte-to-character alphabet
        return [self.backend.id_to_token(int(i)) for i in ids]

    def token_bytes(self, ids):  # list[int] -> bytes: exactly what the tokens spell, even half a character
        # an id past the tokenizer (a model whose embedding has spare rows) spells nothing, as decode() gives it
        return b"".join(b"" if t is None else t.encode() if t == EOS else bytes(self._byte_of[c] for c in t)
                        for t in self.tokens(ids))


def check_byte_alphabet(backend, files):
    """A byte-level BPE has each of GPT-2's 256 byte characters as a token and spells every token in them:
    any text encodes, and any token decodes to bytes. Another tokenizer's vocabulary fails here, not at generation."""
    chars = bytes_to_unicode()   # {byte: character}
    special = {token.content for token in backend.get_added_tokens_decoder().values()} | {EOS}
    tokens = backend.get_vocab(with_added_tokens=False).keys() - special
    missing = [(byte, c) for byte, c in chars.items() if c not in tokens]
    if missing:
        shown = ", ".join(f"{c!r} for byte {byte:#04x}" for byte, c in missing[:3])
        raise MinineoError(f"{files}: not GPT-2's byte-level vocabulary: {len(missing)} of the 256 byte characters "
                           f"are not tokens ({shown}{', ...' * (len(missing) > 3)}); every GPT-Neo tokenizer has all 256")
    alphabet = set(chars.values())
    if not alphabet.issuperset("".join(tokens)):   # 8 ms for GPT-2's 50257 tokens
        token = next(t for t in sorted(tokens) if not alphabet.issuperset(t))
        c = next(c for c in token if c not in alphabet)
        raise MinineoError(f"{files}: not GPT-2's byte-level vocabulary: the token {token!r} has {c!r}, which is "
                           "not one of the 256 byte characters a GPT-Neo tokenizer spells its tokens in")


MISSING_MERGE = re.compile(r"Token `(.*)` out of vocabulary")   # the tokenizers library's words for it


def _read(path, reader, merges_make):  # reader(path), with a broken file as one line naming it, not a Rust panic
    with open_regular_file(path):   # a FIFO, a directory or a link loop is refused here, not waited on
        pass
    try:
        return reader(str(path))
    except Exception as e:   # tokenizers raises plain Exceptions for unreadable, non-JSON or malformed files
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        missing = MISSING_MERGE.search(reason)
        if missing:   # merges.txt from one tokenizer, vocab.json from another
            raise MinineoError(f"{merges_make} the token {missing.group(1)!r}, which {path.name} does not have "
                               "(the vocabulary and the merges belong to different tokenizers)") from None
        raise MinineoError(f"{path}: not a readable tokenizer file ({reason})") from None
