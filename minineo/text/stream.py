"""Streaming detokenizer for byte-level BPE.

A GPT-2 token stands for bytes, not characters: an emoji or a CJK character is often
split across two or three tokens, so decoding token by token would print U+FFFD halves.
The incremental UTF-8 decoder keeps an unfinished character's bytes until it completes.
"""

import codecs


class StreamDetokenizer:
    """Feed token ids one at a time; get back the text each one completes."""

    def __init__(self, tokenizer):
        # tokenizer: anything with token_bytes(ids) -> bytes
        self._token_bytes = tokenizer.token_bytes
        # errors="replace": bytes that can never become valid UTF-8 turn into U+FFFD, exactly
        # as a one-shot decode of the whole sequence with errors="replace" would show them
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id):
        # one id -> str, possibly "" while a character is still incomplete
        return self._decoder.decode(self._token_bytes([token_id]))

    def flush(self):
        # -> str: U+FFFD for a character cut off by the end of generation; the decoder
        # resets, so the object can stream another sequence
        return self._decoder.decode(b"", final=True)
