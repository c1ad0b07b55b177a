"""The model's shape: a small typed record, and the released sizes. (minineo.weights reads config.json into it.)"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    vocab_size: int = 50257               # GPT-2 byte-level BPE
    hidden_size: int = 768                # d
    num_layers: int = 12
    num_heads: int = 12                   # head size = d / num_heads
    intermediate_size: int = 3072         # MLP width; the Hub writes null for 4 * d
    window_size: int = 256                # keys a local layer sees, itself included
    attention_layers: tuple = ("global", "local") * 6
    max_position_embeddings: int = 2048   # rows of wpe: the longest sequence
    layer_norm_epsilon: float = 1e-5
    eos_token_id: int = 50256             # <|endoftext|>; an id past the vocabulary: generation never stops early
    bos_token_id: int | None = None       # where an empty prompt starts; None: eos_token_id (GPT-Neo's bos is eos)
    pad_token_id: int | None = None       # left padding of a batch; None: eos_token_id, as transformers' generate

    @property
    def head_size(self):
        return self.hidden_size // self.num_heads

    @property
    def start_token_id(self):
        return self.eos_token_id if self.bos_token_id is None else self.bos_token_id

    @property
    def padding_token(self):  # (field, id): what left-pads a batch, and the config.json field it comes from
        return ("eos_token_id", self.eos_token_id) if self.pad_token_id is None else ("pad_token_id", self.pad_token_id)

    def window(self, kind):  # how many keys back a layer of this kind sees: None for a global layer
        return self.window_size if kind == "local" else None


def _preset(d, layers, heads):
    return Config(hidden_size=d, num_layers=layers, num_heads=heads, intermediate_size=4 * d,
                  attention_layers=("global", "local") * (layers // 2))


PRESETS = {
    "125M": _preset(768, 12, 12),    # EleutherAI/gpt-neo-125m
    "1.3B": _preset(2048, 24, 16),   # EleutherAI/gpt-neo-1.3B
    "2.7B": _preset(2560, 32, 20),   # EleutherAI/gpt-neo-2.7B
}
