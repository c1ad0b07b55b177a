"""The model's shape, read from a Hub `config.json`: a small typed record with checked values."""
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import MinineoError

ATTENTION_KINDS = ("global", "local")


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
    eos_token_id: int = 50256             # <|endoftext|>, also GPT-Neo's bos

    @property
    def head_size(self):
        return self.hidden_size // self.num_heads


def _preset(d, layers, heads):
    return Config(hidden_size=d, num_layers=layers, num_heads=heads, intermediate_size=4 * d,
                  attention_layers=("global", "local") * (layers // 2))


PRESETS = {
    "125M": _preset(768, 12, 12),    # EleutherAI/gpt-neo-125m
    "1.3B": _preset(2048, 24, 16),   # EleutherAI/gpt-neo-1.3B
    "2.7B": _preset(2560, 32, 20),   # EleutherAI/gpt-neo-2.7B
}


def expand_attention_types(attention_types):
    """[[["global", "local"], 2]] -> ["global", "local", "global", "local"]"""
    try:
        return [kind for pattern, repeats in attention_types for _ in range(repeats) for kind in pattern]
    except (TypeError, ValueError):
        raise MinineoError(f"attention_types must look like [[['global', 'local'], 12]], got {attention_types!r}")


def config_from_dict(raw, source="config.json"):
    def need(key):
        if key not in raw:
            raise MinineoError(f"{source}: missing '{key}'")
        return raw[key]

    if raw.get("model_type") != "gpt_neo":
        raise MinineoError(f"{source}: model_type is {raw.get('model_type')!r}, minineo runs only 'gpt_neo'")
    activation = raw.get("activation_function", "gelu_new")
    if activation != "gelu_new":
        raise MinineoError(f"{source}: activation_function {activation!r} is not supported, only 'gelu_new'")

    d, num_layers, num_heads = need("hidden_size"), need("num_layers"), need("num_heads")
    layers = expand_attention_types(need("attention_types"))
    if len(layers) != num_layers:
        raise MinineoError(f"{source}: attention_types expands to {len(layers)} layers, "
                           f"but num_layers is {num_layers}")
    unknown = sorted(set(layers) - set(ATTENTION_KINDS))
    if unknown:
        raise MinineoError(f"{source}: unknown attention type(s) {unknown}, expected 'global' or 'local'")
    if d % num_heads:
        raise MinineoError(f"{source}: hidden_size {d} is not divisible by num_heads {num_heads}")
    if raw.get("tie_word_embeddings", True) is False:
        raise MinineoError(f"{source}: tie_word_embeddings is false; GPT-Neo ties the LM head to wte")
    eos = raw.get("eos_token_id", 50256)
    return Config(
        vocab_size=need("vocab_size"),
        hidden_size=d,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=raw.get("intermediate_size") or 4 * d,
        window_size=raw.get("window_size", 256),
        attention_layers=tuple(layers),
        max_position_embeddings=need("max_position_embeddings"),
        layer_norm_epsilon=raw.get("layer_norm_epsilon", 1e-5),
        eos_token_id=eos[0] if isinstance(eos, list) else eos,
    )


def load_config(path):
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise MinineoError(f"{path}: no such file (a model directory needs config.json)")
    except json.JSONDecodeError as e:
        raise MinineoError(f"{path}: not valid JSON ({e})")
    return config_from_dict(raw, source=str(path))


def config_to_dict(config):
    """The Hub's config.json for `config`, so that transformers can load what we write."""
    return {
        "model_type": "gpt_neo",
        "architectures": ["GPTNeoForCausalLM"],
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "window_size": config.window_size,
        "attention_types": [[[kind], 1] for kind in config.attention_layers],
        "attention_layers": list(config.attention_layers),
        "max_position_embeddings": config.max_position_embeddings,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "activation_function": "gelu_new",
        "bos_token_id": config.eos_token_id,
        "eos_token_id": config.eos_token_id,
        "tie_word_embeddings": True,
    }
