"""Reading a Hub `config.json` into the model's Config (minineo/model/config.py), every value checked."""
import json
import math
import numbers
import reprlib
from pathlib import Path

from ..errors import MinineoError, is_int
from ..model.config import Config
from .files import json_kind, read_small_file

ATTENTION_KINDS = ("global", "local")


def expand_attention_types(attention_types):
    """[[["global", "local"], 2]] -> ["global", "local", "global", "local"]; check it first with
    count_attention_layers, which finds a bad one without building the list."""
    return [kind for pattern, repeats in attention_types for _ in range(repeats) for kind in pattern]


ATTENTION_TYPES_FORM = "a list of [pattern, repeats] pairs like [[['global', 'local'], 12]]"


def count_attention_layers(attention_types, source):
    """The number of layers attention_types expands to, computed without expanding it (a repeat count
    of 10**8 costs nothing), after checking every pair: a non-empty list of 'global'/'local', and a
    repeat count >= 1."""
    if not isinstance(attention_types, list):
        raise MinineoError(f"{source}: attention_types must be {ATTENTION_TYPES_FORM}, got {_short(attention_types)}")
    total = 0
    for i, pair in enumerate(attention_types):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise MinineoError(f"{source}: attention_types[{i}] must be a [pattern, repeats] pair like "
                               f"[['global', 'local'], 12], got {_short(pair)}")
        pattern, repeats = pair
        if not (isinstance(pattern, list) and pattern):
            raise MinineoError(f"{source}: attention_types[{i}][0] must be a non-empty list of 'global' and "
                               f"'local', got {_short(pattern)}")
        unknown = [kind for kind in pattern if not (isinstance(kind, str) and kind in ATTENTION_KINDS)]
        if unknown:
            raise MinineoError(f"{source}: unknown attention type(s) {_short(unknown)} in attention_types[{i}], "
                               "expected 'global' or 'local'")
        if not is_int(repeats, 1):
            raise MinineoError(f"{source}: attention_types[{i}][1] (the repeat count) must be an integer >= 1, "
                               f"got {_short(repeats)}")
        total += len(pattern) * repeats
    return total


# Far more layers than any GPT-Neo has (2.7B: 32), yet a bound: the layer list and the table of
# expected tensors are built from num_layers, so a config.json must not ask for 10**9 of them.
MAX_LAYERS = 10_000


def _short(value):  # a value from the file, shown in a message: one line, a few dozen characters at most
    return reprlib.repr(value)


def config_from_dict(raw, source="config.json"):
    """A Config from a parsed config.json, every field's type and range checked before it is used."""
    if not isinstance(raw, dict):
        raise MinineoError(f"{source}: expected a JSON object of settings, got {json_kind(raw)}")

    def need(key):
        if key not in raw:
            raise MinineoError(f"{source}: missing '{key}'")
        return raw[key]

    def positive_int(key, value):
        if not is_int(value, 1):
            raise MinineoError(f"{source}: {key} must be an integer >= 1, got {_short(value)}")
        return value

    if raw.get("model_type") != "gpt_neo":
        raise MinineoError(f"{source}: model_type is {_short(raw.get('model_type'))}, minineo runs only 'gpt_neo'")
    activation = raw.get("activation_function", "gelu_new")
    if activation != "gelu_new":
        raise MinineoError(f"{source}: activation_function {_short(activation)} is not supported, only 'gelu_new'")

    sizes = {key: positive_int(key, need(key))
             for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "max_position_embeddings")}
    d, num_layers, num_heads, vocab_size = (sizes[key] for key in ("hidden_size", "num_layers", "num_heads", "vocab_size"))
    if num_layers > MAX_LAYERS:
        raise MinineoError(f"{source}: num_layers must be at most {MAX_LAYERS} (GPT-Neo 2.7B has 32), got {num_layers}")
    window_size = positive_int("window_size", raw.get("window_size", 256))
    inner = raw.get("intermediate_size")
    inner = 4 * d if inner is None else positive_int("intermediate_size", inner)
    eps = raw.get("layer_norm_epsilon", 1e-5)
    try:
        eps_value = float(eps) if isinstance(eps, numbers.Real) and not isinstance(eps, bool) else math.nan
    except OverflowError:   # an integer too big for a float
        eps_value = math.inf
    if not 0 < eps_value < math.inf:
        raise MinineoError(f"{source}: layer_norm_epsilon must be a finite number > 0, got {_short(eps)}")
    # Special ids are not checked against vocab_size, as transformers does not: an eos the model cannot
    # produce only means generation never stops early. A bos or pad id outside the vocabulary is refused
    # where it would be fed to the model (minineo.text.generation.prompt_batch), naming the field.
    special = {}
    for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
        value = raw.get(key)
        if key != "pad_token_id" and value is None:
            value = 50256   # transformers' default for GPT-Neo: <|endoftext|>
        ids = value if isinstance(value, list) and key == "eos_token_id" else [value]
        if value is not None and not (ids and all(is_int(i, 0) for i in ids)):
            listed = " or a non-empty list of them" if key == "eos_token_id" else ""
            raise MinineoError(f"{source}: {key} must be an integer >= 0{listed}, got {_short(value)}")
        special[key] = ids[0]
    if d % num_heads:
        raise MinineoError(f"{source}: hidden_size {d} is not divisible by num_heads {num_heads}")

    attention_types = need("attention_types")
    total = count_attention_layers(attention_types, source)
    if total != num_layers:
        raise MinineoError(f"{source}: attention_types expands to {total} layers, but num_layers is {num_layers}")
    if raw.get("tie_word_embeddings", True) is False:
        raise MinineoError(f"{source}: tie_word_embeddings is false; GPT-Neo ties the LM head to wte")
    return Config(
        vocab_size=vocab_size,
        hidden_size=d,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=inner,
        window_size=window_size,
        attention_layers=tuple(expand_attention_types(attention_types)),
        max_position_embeddings=sizes["max_position_embeddings"],
        layer_norm_epsilon=eps_value,
        **special,
    )


MAX_CONFIG_BYTES = 16 << 20   # a config.json is a few KB; reading stops here


def load_config(path):
    """The Config in a config.json: missing, unreadable, not a regular file (a directory, a FIFO),
    not UTF-8, not a JSON object, or any field of the wrong type or range is a one-line MinineoError."""
    path = Path(path)
    data = read_small_file(path, MAX_CONFIG_BYTES, missing="no such file (a model directory needs config.json)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MinineoError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise MinineoError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise MinineoError(f"{path}: not a config.json: its JSON is nested too deeply") from None
    except ValueError as e:   # an integer of thousands of digits
        raise MinineoError(f"{path}: not a config.json minineo can read ({_short(str(e))})") from None
    if not isinstance(raw, dict):
        raise MinineoError(f"{path}: expected a JSON object of settings, got {json_kind(raw)}")
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
        "bos_token_id": config.start_token_id,
        "eos_token_id": config.eos_token_id,
        **({} if config.pad_token_id is None else {"pad_token_id": config.pad_token_id}),
        "tie_word_embeddings": True,
    }
