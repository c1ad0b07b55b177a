"""Every bad file is one clear line: each case breaks one thing in a good tiny checkpoint (a header
field, the file's length, config.json, what sits at a path) and checks that minineo.load names the
file, the tensor or the field and what was expected, in a one-line MinineoError; a few run through
the CLI, which must exit 1 with one `minineo: error: ` line and no traceback."""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import minineo
from minineo.errors import MinineoError
from minineo.weights.int8_copy import quantize_checkpoint
from minineo.weights.random_checkpoint import write_random_checkpoint
from minineo.weights.safetensors_io import SafetensorsFile, write_safetensors
from conftest import rewrite_tensors, tiny_config

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
WEIGHTS, CONFIG = "model.safetensors", "config.json"
BIAS = "transformer.ln_f.bias"                     # [48] float32: 192 bytes
C_FC = "transformer.h.1.mlp.c_fc.weight"           # [192, 48]: int8 in the quantized copy
SCALE = C_FC + "_scale"                            # [192] float32


# ---- good checkpoints to break ----

@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("good") / "ckpt", tiny_config())


@pytest.fixture(scope="module")
def good_int8(tmp_path_factory, good):
    return quantize_checkpoint(good, tmp_path_factory.mktemp("good_int8") / "ckpt")


@pytest.fixture
def ckpt(tmp_path, good):
    return Path(shutil.copytree(good, tmp_path / "ckpt"))


@pytest.fixture
def ckpt_int8(tmp_path, good_int8):
    return Path(shutil.copytree(good_int8, tmp_path / "ckpt_int8"))


@contextmanager
def fails_if_it_hangs(seconds=30):
    """A load that waits on a FIFO would wait forever: the alarm turns that into a failure."""
    def hung(signum, frame):
        raise AssertionError(f"still running after {seconds} s: waiting on a FIFO?")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def load_error(directory, match):
    """The one-line MinineoError that loading the directory raises; it must match `match`."""
    with fails_if_it_hangs(), pytest.raises(MinineoError, match=match) as error:
        minineo.load(directory)
    message = str(error.value)
    assert "\n" not in message and message.isprintable(), repr(message)
    return message


# ---- safetensors: the header and the layout, by the format's own rules ----

def read_safetensors(path):  # -> (header dict, the data bytes after the header)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_raw(path, header, data):  # header: a dict, or the header's exact bytes
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def by_offset(header):  # tensor names in the order of their data
    return sorted((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"])


def overlap(header, data):   # the second tensor starts 4 bytes inside the first (and keeps its size)
    first, second = by_offset(header)[:2]
    header[second]["data_offsets"] = [o - 4 for o in header[second]["data_offsets"]]
    return header, data


def negative_offset(header, data):
    first = by_offset(header)[0]
    header[first]["data_offsets"] = [-4, header[first]["data_offsets"][1] - 4]
    return header, data


def hole(header, data):   # the last tensor moves 8 bytes on, with 8 more bytes of data to hold it
    last = by_offset(header)[-1]
    header[last]["data_offsets"] = [o + 8 for o in header[last]["data_offsets"]]
    return header, data + bytes(8)


def entry(name, **changes):
    def edit(header, data):
        header[name] |= changes
        return header, data
    return edit


def without(key):
    def edit(header, data):
        del header[BIAS][key]
        return header, data
    return edit


def header_bytes(text):
    return lambda header, data: (text, data)


def header_length(n):   # the 8-byte length field says n; everything after it is kept
    def edit(header, data):
        return None, data
    edit.length = n
    return edit


def duplicate(header, data):  # the same tensor name twice in the JSON text
    text = json.dumps(header)
    twice = text[:-1] + f', "{BIAS}": ' + json.dumps(header[BIAS]) + "}"
    return twice.encode(), data


HEADER_CASES = [
    pytest.param(overlap, r"model.safetensors: tensors \S+ and \S+ overlap \(their data_offsets \[0, \d+\] and "
                          r"\[\d+, \d+\] share bytes\)", id="overlapping offsets"),
    pytest.param(negative_offset, r"model.safetensors: tensor \S+ has data_offsets \[-4, \d+\], expected "
                                  r"\[begin, end\], integers with 0 <= begin <= end", id="negative offset"),
    pytest.param(hole, r"model.safetensors: bytes \[\d+, \d+\) of the data belong to no tensor \(a hole in the "
                       r"data_offsets before tensor \S+\)", id="a hole"),
    pytest.param(entry(BIAS, shape=[47]), rf"model.safetensors: tensor {BIAS} has data_offsets \[\d+, \d+\], 192 "
                                          r"bytes, but its shape \[47\] of F32 needs 188 bytes",
                 id="range != shape x itemsize"),
    pytest.param(entry(BIAS, dtype="F16"), rf"tensor {BIAS} has data_offsets \[\d+, \d+\], 192 bytes, but its "
                                           r"shape \[48\] of F16 needs 96 bytes", id="range != shape x itemsize (dtype)"),
    pytest.param(entry(BIAS, dtype="F17"), rf"model.safetensors: tensor {BIAS} has unknown dtype F17, expected "
                                           r"one of BOOL, U8, I8", id="unknown dtype"),
    pytest.param(entry(BIAS, dtype=32), rf"tensor {BIAS} has unknown dtype 32, expected one of", id="dtype not a string"),
    pytest.param(entry(BIAS, shape=[-48]), rf"tensor {BIAS} has shape \[-48\], expected a list of integers >= 0",
                 id="negative dimension"),
    pytest.param(entry(BIAS, shape=[48.0]), rf"tensor {BIAS} has shape \[48.0\], expected a list of integers",
                 id="float dimension"),
    pytest.param(entry(BIAS, shape=[True] * 48), rf"tensor {BIAS} has shape \[True, True, True, True, True, True, "
                                                 r"\.\.\.\], expected a list of integers", id="bool dimensions"),
    pytest.param(entry(BIAS, shape=48), rf"tensor {BIAS} has shape 48, expected a list", id="shape not a list"),
    pytest.param(entry(BIAS, data_offsets=[0, 192, 384]), rf"tensor {BIAS} has data_offsets \[0, 192, 384\], "
                                                          r"expected \[begin, end\]", id="three offsets"),
    pytest.param(entry(BIAS, data_offsets=[192, 0]), rf"tensor {BIAS} has data_offsets \[192, 0\], expected "
                                                     r"\[begin, end\], integers with 0 <= begin <= end", id="begin > end"),
    pytest.param(without("dtype"), rf"model.safetensors: tensor {BIAS} has no dtype in the header", id="missing dtype"),
    pytest.param(without("shape"), rf"model.safetensors: tensor {BIAS} has no shape in the header", id="missing shape"),
    pytest.param(without("data_offsets"), rf"model.safetensors: tensor {BIAS} has no data_offsets in the header",
                 id="missing data_offsets"),
    pytest.param(lambda h, d: (h | {BIAS: [1, 2]}, d), rf"tensor {BIAS}: its header entry is an array, expected "
                                                      r"an object with dtype, shape and data_offsets",
                 id="entry not an object"),
    pytest.param(duplicate, rf"not a safetensors file: {BIAS} appears twice in the same object of its header",
                 id="duplicate tensor name"),
    pytest.param(lambda h, d: (h | {"__metadata__": {"format": 1}}, d),
                 r"model.safetensors: __metadata__ in the header must be an object of strings", id="metadata not strings"),
    pytest.param(header_bytes(b"[]"), r"model.safetensors: not a safetensors file: its header is an array, "
                                      r"expected a JSON object of tensors", id="header a JSON list"),
    pytest.param(header_bytes(b'{"\xff\xfe": 1}'), r"model.safetensors: not a safetensors file: its header is not "
                                                   r"UTF-8 \(byte 0xff at offset 10\)", id="header not UTF-8"),
    pytest.param(header_bytes(b'{"a": '), r"model.safetensors: not a safetensors file: its header is not valid "
                                          r"JSON \(Expecting value at character 6 of the header\)", id="header not JSON"),
    pytest.param(header_bytes(b"[" * 100_000), r"not a safetensors file: its header is nested too deeply",
                 id="header nested 100000 deep"),
    pytest.param(header_bytes(b'{"a": ' + b"1" * 5000 + b"}"), r"not a safetensors file: its header cannot be read "
                                                               r"\('Exceeds the ", id="header with a 5000-digit number"),
    pytest.param(header_length(2 ** 60), r"model.safetensors: not a safetensors file: its first 8 bytes give a "
                                         r"header length of 1152921504606846976 bytes, more than the format's limit "
                                         r"of 100000000", id="header length 2**60"),
    pytest.param(header_length(2 ** 64 - 1), r"header length of 18446744073709551615 bytes, more than the format's "
                                             r"limit", id="header length 2**64-1"),
]


@pytest.mark.parametrize("edit, message", HEADER_CASES)
def test_bad_safetensors_header(ckpt, edit, message):
    path = ckpt / WEIGHTS
    header, data = read_safetensors(path)
    if hasattr(edit, "length"):
        raw = path.read_bytes()
        path.write_bytes(struct.pack("<Q", edit.length) + raw[8:])
    else:
        write_raw(path, *edit(header, data))
    load_error(ckpt, message)


def test_huge_header_length_allocates_nothing(ckpt):
    """A length field within the format's limit (100 MB), in a file far shorter: refused from the
    file's size, before a 100 MB read is attempted (read(n) allocates n bytes at once)."""
    path = ckpt / WEIGHTS
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 100_000_000) + raw[8:])
    tracemalloc.start()
    try:
        load_error(ckpt, rf"model.safetensors: the file is cut short: its header is 100000000 bytes long but only "
                         rf"{len(raw) - 8} follow the header length \(an interrupted download\?\)")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5e6, f"peak traced memory {peak / 1e6:.1f} MB"


@pytest.mark.parametrize("keep, message", [
    pytest.param(lambda n, size: size // 2, r"the file is cut short: its header describes {data} bytes of data but only "
                                            r"{kept} follow \(an interrupted download\?\)", id="data cut in half"),
    pytest.param(lambda n, size: size - 1, r"the file is cut short: its header describes {data} bytes of data but only "
                                           r"{kept} follow", id="last byte missing"),
    pytest.param(lambda n, size: 8 + n // 2, r"the file is cut short: its header is {n} bytes long but only {half} "
                                             r"follow the header length", id="header cut in half"),
    pytest.param(lambda n, size: 5, r"the file is cut short: 5 bytes, too few for a safetensors file's 8-byte "
                                    r"header length", id="5 bytes"),
    pytest.param(lambda n, size: 0, r"the file is empty \(an interrupted download\?\)", id="empty"),
])
def test_truncated_safetensors_says_cut_short(ckpt, keep, message):
    path = ckpt / WEIGHTS
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    kept = keep(n, len(raw))
    path.write_bytes(raw[:kept])
    message = message.format(data=len(raw) - 8 - n, kept=kept - 8 - n, n=n, half=n // 2)
    load_error(ckpt, re.escape(f"{path}: ") + message)


def test_bytes_after_the_data_are_an_error(ckpt):
    path = ckpt / WEIGHTS
    header, data = read_safetensors(path)
    write_raw(path, header, data + b"junk")
    load_error(ckpt, rf"model.safetensors: 4 bytes follow the last tensor's data: its header describes {len(data)} "
                     rf"bytes of data but {len(data) + 4} follow")


def test_a_tensor_name_that_is_not_printable_stays_on_one_line(ckpt):
    path = ckpt / WEIGHTS
    header, data = read_safetensors(path)
    header["evil\nname"] = header.pop(BIAS)
    write_raw(path, header, data)
    message = load_error(ckpt, rf"checkpoint has no tensor {BIAS}")
    header, data = read_safetensors(path)
    header["evil\nname"]["shape"] = [47]
    write_raw(path, header, data)
    message = load_error(ckpt, r"tensor 'evil\\nname' has data_offsets")
    assert "evil\\nname" in message


# ---- what sits at a path: a directory, a FIFO, a symlink loop, an unreadable file ----

def make_dir(path):
    path.unlink()
    path.mkdir()


def make_fifo(path):
    path.unlink()
    os.mkfifo(path)


def make_loop(path):   # a link to itself: ELOOP
    path.unlink()
    path.symlink_to(path.name)


def make_broken_link(path):
    path.unlink()
    path.symlink_to("nowhere.safetensors")


def split_into_shards(directory, second=None):  # model.safetensors -> two shards + model.safetensors.index.json
    """The tensors for which second(name) is true go to the second shard (by default the later half by name)."""
    f = SafetensorsFile(directory / WEIGHTS)
    names = sorted(f.names())
    second = second or (lambda name: names.index(name) >= len(names) // 2)
    halves = {"model-00001-of-00002.safetensors": [n for n in names if not second(n)],
              "model-00002-of-00002.safetensors": [n for n in names if second(n)]}
    for file, part in halves.items():
        write_safetensors(directory / file, {n: np.array(f.raw(n)) for n in part})
    (directory / WEIGHTS).unlink()
    index = {"weight_map": {n: file for file, part in halves.items() for n in part}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))


SHARD, INDEX = "model-00002-of-00002.safetensors", "model.safetensors.index.json"
PATH_CASES = [
    pytest.param(WEIGHTS, make_fifo, r"model.safetensors: is a FIFO \(named pipe\), not a file",
                 id="FIFO as model.safetensors"),
    pytest.param(CONFIG, make_fifo, r"config.json: is a FIFO \(named pipe\), not a file", id="FIFO as config.json"),
    pytest.param(WEIGHTS, make_dir, r"model.safetensors: is a directory, not a file", id="directory as model.safetensors"),
    pytest.param(CONFIG, make_dir, r"config.json: is a directory, not a file", id="directory as config.json"),
    pytest.param(WEIGHTS, make_loop, r"model.safetensors: a symbolic link loop \(too many levels of symbolic links\)",
                 id="symlink loop as model.safetensors"),
    pytest.param(CONFIG, make_loop, r"config.json: a symbolic link loop", id="symlink loop as config.json"),
    pytest.param(WEIGHTS, make_broken_link, r"model.safetensors: a broken symbolic link \(what it points to does "
                                            r"not exist\)", id="broken link as model.safetensors"),
    pytest.param(SHARD, make_fifo, rf"{SHARD}: is a FIFO \(named pipe\), not a file", id="FIFO as a shard"),
    pytest.param(SHARD, make_dir, rf"{SHARD}: is a directory, not a file", id="directory as a shard"),
    pytest.param(SHARD, make_loop, rf"{SHARD}: a symbolic link loop", id="symlink loop as a shard"),
    pytest.param(INDEX, make_fifo, rf"{INDEX}: is a FIFO \(named pipe\), not a file", id="FIFO as the index"),
    pytest.param(INDEX, make_dir, rf"{INDEX}: is a directory, not a file", id="directory as the index"),
]


@pytest.mark.parametrize("name, make, message", PATH_CASES)
def test_not_a_regular_file(ckpt, name, make, message):
    if name in (SHARD, INDEX):
        split_into_shards(ckpt)
        minineo.load(ckpt)   # the sharded copy is good until it is broken
    make(ckpt / name)
    load_error(ckpt, message)


def test_missing_shard_still_says_so(ckpt):
    split_into_shards(ckpt)
    (ckpt / SHARD).unlink()
    load_error(ckpt, rf"{SHARD}: no such file \(a shard listed in {INDEX}\)")


@pytest.mark.parametrize("name", [WEIGHTS, CONFIG])
def test_unreadable_file(ckpt, name, monkeypatch):
    # chmod 0 would not stop root (CI runs as root), so the open itself is refused, as for another user
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        if Path(path).name == name:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    load_error(ckpt, rf"{name}: permission denied \(the file is not readable\)")


# ---- config.json ----

def edit_config(directory, **changes):
    raw = json.loads((directory / CONFIG).read_text()) | changes
    (directory / CONFIG).write_text(json.dumps(raw))


CONFIG_CASES = [
    pytest.param(dict(num_layers=0), "num_layers must be an integer >= 1, got 0", id="num_layers 0"),
    pytest.param(dict(num_layers=True), "num_layers must be an integer >= 1, got True", id="num_layers true"),
    pytest.param(dict(hidden_size="48"), "hidden_size must be an integer >= 1, got '48'", id="hidden_size a string"),
    pytest.param(dict(num_heads=4.0), r"num_heads must be an integer >= 1, got 4.0", id="num_heads a float"),
    pytest.param(dict(vocab_size=-300), "vocab_size must be an integer >= 1, got -300", id="vocab_size negative"),
    pytest.param(dict(max_position_embeddings=None), "max_position_embeddings must be an integer >= 1, got None",
                 id="max_position_embeddings null"),
    pytest.param(dict(window_size=0), "window_size must be an integer >= 1, got 0", id="window_size 0"),
    pytest.param(dict(intermediate_size=0), "intermediate_size must be an integer >= 1, got 0", id="intermediate_size 0"),
    pytest.param(dict(layer_norm_epsilon=-1e-5), r"layer_norm_epsilon must be a finite number > 0, got -1e-05",
                 id="negative layer_norm_epsilon"),
    pytest.param(dict(layer_norm_epsilon=0), r"layer_norm_epsilon must be a finite number > 0, got 0",
                 id="layer_norm_epsilon 0"),
    pytest.param(dict(layer_norm_epsilon=float("nan")), r"layer_norm_epsilon must be a finite number > 0, got nan",
                 id="layer_norm_epsilon NaN"),
    pytest.param(dict(layer_norm_epsilon=10 ** 400), r"layer_norm_epsilon must be a finite number > 0",
                 id="layer_norm_epsilon 10**400"),
    pytest.param(dict(layer_norm_epsilon="1e-5"), r"layer_norm_epsilon must be a finite number > 0, got '1e-5'",
                 id="layer_norm_epsilon a string"),
    pytest.param(dict(eos_token_id=[299, "300"]), r"eos_token_id must be an integer >= 0 or a non-empty list of them, "
                                                  r"got \[299, '300'\]", id="eos_token_id list with a string"),
    pytest.param(dict(eos_token_id=[]), r"eos_token_id must be .* got \[\]", id="eos_token_id empty list"),
    pytest.param(dict(eos_token_id=-1), r"eos_token_id must be .* got -1", id="eos_token_id -1"),
    pytest.param(dict(bos_token_id=1.5), r"bos_token_id must be an integer >= 0, got 1.5", id="bos_token_id a float"),
    pytest.param(dict(pad_token_id=[0]), r"pad_token_id must be an integer >= 0, got \[0\]", id="pad_token_id a list"),
    pytest.param(dict(attention_types="global"), r"attention_types must be a list of \[pattern, repeats\] pairs like "
                                                 r"\[\[\['global', 'local'\], 12\]\], got 'global'",
                 id="attention_types a string"),
    pytest.param(dict(attention_types=[[["global", "local"]]]), r"attention_types\[0\] must be a \[pattern, repeats\] "
                                                                r"pair like \[\['global', 'local'\], 12\], got "
                                                                r"\[\['global', 'local'\]\]",
                 id="attention_types pair without repeats"),
    pytest.param(dict(attention_types=[[[], 4]]), r"attention_types\[0\]\[0\] must be a non-empty list of 'global' "
                                                  r"and 'local', got \[\]", id="empty pattern"),
    pytest.param(dict(attention_types=[[["global", "local"], 0]]), r"attention_types\[0\]\[1\] \(the repeat count\) "
                                                                   r"must be an integer >= 1, got 0", id="repeat count 0"),
    pytest.param(dict(attention_types=[[["global", "local"], "2"]]), r"attention_types\[0\]\[1\] \(the repeat count\) "
                                                                     r"must be an integer >= 1, got '2'",
                 id="repeat count a string"),
    pytest.param(dict(attention_types=[[["global", ["local"]], 2]]), r"unknown attention type\(s\) \[\['local'\]\] in "
                                                                     r"attention_types\[0\]", id="attention type a list"),
    pytest.param(dict(num_layers=10 ** 8, attention_types=[[["global"], 10 ** 8]]),
                 "num_layers must be at most 10000 .GPT-Neo 2.7B has 32., got 100000000", id="num_layers 10**8"),
    pytest.param(dict(model_type=None), "model_type is None, minineo runs only 'gpt_neo'", id="model_type null"),
]


@pytest.mark.parametrize("changes, message", CONFIG_CASES)
def test_bad_config_field(ckpt, changes, message):
    edit_config(ckpt, **changes)
    load_error(ckpt, r"config.json: " + message)


def test_missing_config_field(ckpt):
    raw = json.loads((ckpt / CONFIG).read_text())
    del raw["num_heads"]
    (ckpt / CONFIG).write_text(json.dumps(raw))
    load_error(ckpt, r"config.json: missing 'num_heads'")


def test_huge_repeat_count_is_rejected_without_allocating(ckpt):
    """Expanding [["global", "local"], 10**8] would build a list of 2 * 10**8 layers (1.6 GB)."""
    edit_config(ckpt, attention_types=[[["global", "local"], 10 ** 8]])
    tracemalloc.start()
    try:
        load_error(ckpt, r"config.json: attention_types expands to 200000000 layers, but num_layers is 4")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5e6, f"peak traced memory {peak / 1e6:.1f} MB"


@pytest.mark.parametrize("text, message", [
    pytest.param(b"[1, 2]", r"config.json: expected a JSON object of settings, got an array", id="a JSON list"),
    pytest.param(b'"gpt_neo"', r"config.json: expected a JSON object of settings, got a string", id="a JSON string"),
    pytest.param(b'{"model_type": "gpt_neo",', r"config.json: not valid JSON \(", id="not JSON"),
    pytest.param(b'\xff{"model_type": "gpt_neo"}', r"config.json: not UTF-8 text \(byte 0xff at offset 0\)",
                 id="not UTF-8"),
    pytest.param(b"", r"config.json: not valid JSON \(Expecting value", id="empty"),
    pytest.param(b"[" * 100_000, r"config.json: not a config.json: its JSON is nested too deeply",
                 id="nested 100000 deep"),
])
def test_bad_config_file(ckpt, text, message):
    (ckpt / CONFIG).write_bytes(text)
    load_error(ckpt, message)


def test_config_with_a_bom_and_null_intermediate_size_loads(ckpt, good):
    raw = json.loads((ckpt / CONFIG).read_text()) | {"intermediate_size": None}   # null: 4 * hidden_size
    (ckpt / CONFIG).write_bytes(b"\xef\xbb\xbf" + json.dumps(raw).encode())
    model = minineo.load(ckpt)
    assert model.config.intermediate_size == 192 and model.config == minineo.load(good).config


# ---- checkpoint: the tensors against config.json; int8 scales ----

def test_vocab_size_disagreeing_with_wte_names_the_tensor(ckpt):
    edit_config(ckpt, vocab_size=301)
    load_error(ckpt, r"model.safetensors: tensor transformer.wte.weight has shape \[300, 48\], expected \[301, 48\] "
                     r"from config.json \(vocab_size x hidden_size\)")


def test_float_weight_of_an_integer_dtype(ckpt):
    rewrite_tensors(ckpt, lambda t: t | {BIAS: t[BIAS].view(np.int32)})
    load_error(ckpt, rf"model.safetensors: tensor {BIAS} is I32, expected a float tensor \(F32, F16, BF16, F64\) "
                     rf"or an int8 \(I8\) matrix with its {BIAS}_scale")


def with_scale(make):
    return lambda t: t | {SCALE: make(t[SCALE])}


def set_row(row, value):
    def make(scale):
        scale = scale.copy()
        scale[row] = value
        return scale
    return make


INT8_CASES = [
    pytest.param(with_scale(set_row(3, 0)), rf"model.safetensors: tensor {SCALE} holds a zero scale \(0\) at row 3, "
                                            r"expected finite values > 0 \(a corrupt checkpoint\?\)", id="zero scale"),
    pytest.param(with_scale(set_row(5, np.nan)), rf"tensor {SCALE} holds a NaN scale \(nan\) at row 5", id="NaN scale"),
    pytest.param(with_scale(set_row(0, np.inf)), rf"tensor {SCALE} holds an infinite scale \(inf\) at row 0",
                 id="inf scale"),
    pytest.param(with_scale(set_row(191, -0.01)), rf"tensor {SCALE} holds a negative scale \(-0.01\) at row 191",
                 id="negative scale"),
    pytest.param(with_scale(lambda s: s[:-1]), rf"tensor {SCALE} has shape \[191\], expected \[192\] \(one scale per "
                                               rf"row of int8 {C_FC}\)", id="scale of the wrong shape"),
    pytest.param(with_scale(lambda s: s[:, None]), rf"tensor {SCALE} has shape \[192, 1\], expected \[192\]",
                 id="scale of the wrong rank"),
    pytest.param(with_scale(lambda s: np.ones(192, np.int32)), rf"tensor {SCALE} is I32, expected a float tensor "
                                                               rf"\(the per-row scale of int8 {C_FC}\)",
                 id="integer scale"),
    pytest.param(lambda t: {k: v for k, v in t.items() if k != SCALE}, rf"int8 tensor {C_FC} has no {SCALE}",
                 id="no scale"),
    pytest.param(lambda t: t | {BIAS: np.zeros(48, np.int8)}, rf"tensor {BIAS} is int8, but only matrices can be int8",
                 id="int8 vector"),
]


@pytest.mark.parametrize("change, message", INT8_CASES)
def test_bad_int8_checkpoint(ckpt_int8, change, message):
    minineo.load(ckpt_int8)   # good until it is broken
    rewrite_tensors(ckpt_int8, change)
    load_error(ckpt_int8, message)


def test_int8_scales_are_checked_in_their_own_shard(ckpt_int8, good_int8):
    """The scale may sit in another shard than its matrix: found there, and checked there."""
    split_into_shards(ckpt_int8, second=lambda name: name.endswith("_scale"))
    index = json.loads((ckpt_int8 / INDEX).read_text())["weight_map"]
    assert index[C_FC] != index[SCALE]
    ids = np.arange(10)
    assert np.array_equal(minineo.load(ckpt_int8)(ids), minineo.load(good_int8)(ids))
    shard = ckpt_int8 / index[SCALE]
    f = SafetensorsFile(shard)
    tensors = {name: np.array(f.raw(name)) for name in f.names()}
    tensors[SCALE][7] = 0
    write_safetensors(shard, tensors)
    load_error(ckpt_int8, rf"{index[SCALE]}: tensor {SCALE} holds a zero scale \(0\) at row 7")


def test_an_all_zero_row_quantizes_to_a_loadable_checkpoint(tmp_path, ckpt):
    """quantize() gives an all-zero row scale 0, which a loaded file may not hold: the int8 copy stores 1."""
    rewrite_tensors(ckpt, lambda t: t | {C_FC: np.concatenate([np.zeros((1, 48), np.float32), t[C_FC][1:]])})
    dst = quantize_checkpoint(ckpt, tmp_path / "int8")
    assert SafetensorsFile(dst / WEIGHTS).raw(SCALE)[0] == 1
    ids = np.arange(12)
    assert np.array_equal(minineo.load(dst)(ids), minineo.load(ckpt, int8=True)(ids))


# ---- what works keeps working ----

def to_bfloat16_file(path):  # every F32 tensor rewritten as BF16 (the top 16 bits), by hand: NumPy has no bfloat16
    header, data = read_safetensors(path)
    out, offset = {"__metadata__": header["__metadata__"]}, 0
    chunks = []
    for name in by_offset(header):
        begin, end = header[name]["data_offsets"]
        bits = (np.frombuffer(data[begin:end], np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
        out[name] = {"dtype": "BF16", "shape": header[name]["shape"], "data_offsets": [offset, offset + len(bits)]}
        chunks.append(bits)
        offset += len(bits)
    write_raw(path, out, b"".join(chunks))


@pytest.mark.parametrize("convert", ["float16", "bfloat16", "sharded", "unaligned header", "mask buffers"])
def test_good_checkpoints_still_load(ckpt, good, convert, capsys):
    if convert == "float16":
        rewrite_tensors(ckpt, lambda t: {k: v.astype(np.float16) for k, v in t.items()})
    elif convert == "bfloat16":
        to_bfloat16_file(ckpt / WEIGHTS)
    elif convert == "sharded":
        split_into_shards(ckpt)
    elif convert == "unaligned header":   # the format pads to 8 bytes, but a reader must not need it
        header, data = read_safetensors(ckpt / WEIGHTS)
        write_raw(ckpt / WEIGHTS, json.dumps(header).encode() + b"   ", data)
    else:   # what older transformers saved beside the weights, plus a zero-size tensor
        rewrite_tensors(ckpt, lambda t: t | {"transformer.h.0.attn.attention.bias": np.ones((1, 1, 4, 4), bool),
                                             "transformer.h.0.attn.attention.masked_bias": np.array(-1e9, np.float32),
                                             "transformer.h.0.empty": np.zeros((0, 3), np.float32)})
    ids = np.arange(16)
    # float16 and bfloat16 round the weights; an unaligned view changes only BLAS's order of summation
    tolerance = {"float16": 1e-3, "bfloat16": 1e-2, "unaligned header": 1e-5}.get(convert, 0)
    worst = float(np.abs(minineo.load(ckpt)(ids) - minineo.load(good)(ids)).max())
    print(f"{convert}: max abs logit difference {worst:.3g}")
    assert worst <= tolerance
    err = capsys.readouterr().err
    assert ("ignoring 1 tensor(s) that GPT-Neo does not use: transformer.h.0.empty" in err) == (convert == "mask buffers")


def test_loading_copies_nothing(ckpt):
    params = minineo.load(ckpt, fast=False).params
    for w in (params["wte"], params["blocks"][3]["mlp"]["c_fc"]["w"], params["ln_f"]["b"]):
        assert isinstance(w.base, np.memmap) and not w.flags.writeable


# ---- through the command line: exit 1, one line, no traceback ----

def break_it(how, directory):
    path = directory / WEIGHTS
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:200_000])
    elif how == "header length 2**60":
        path.write_bytes(struct.pack("<Q", 2 ** 60) + path.read_bytes()[8:])
    elif how == "FIFO as config.json":
        make_fifo(directory / CONFIG)
    elif how == "symlink loop":
        make_loop(path)
    elif how == "num_layers 0":
        edit_config(directory, num_layers=0)
    elif how == "zero int8 scale":
        rewrite_tensors(directory, with_scale(set_row(2, 0)))


CLI_CASES = {
    "truncated": r"model.safetensors: the file is cut short: its header describes \d+ bytes of data but only \d+ "
                 r"follow \(an interrupted download\?\)",
    "header length 2**60": r"model.safetensors: not a safetensors file: its first 8 bytes give a header length",
    "FIFO as config.json": r"config.json: is a FIFO \(named pipe\), not a file",
    "symlink loop": r"model.safetensors: a symbolic link loop",
    "num_layers 0": r"config.json: num_layers must be an integer >= 1, got 0",
    "zero int8 scale": rf"model.safetensors: tensor {SCALE} holds a zero scale \(0\) at row 2",
}


@pytest.mark.parametrize("how", CLI_CASES)
def test_cli_prints_one_line_and_exits_1(ckpt, ckpt_int8, how):
    directory = ckpt_int8 if how == "zero int8 scale" else ckpt
    break_it(how, directory)
    done = subprocess.run([sys.executable, "-m", "minineo", "-m", str(directory), "-n", "1", "hi"],
                          capture_output=True, env=ENV, cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)
    err = done.stderr.decode()
    assert done.returncode == 1, (done.returncode, err)
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("minineo: error: "), err
    assert re.search(CLI_CASES[how], err), err
    assert done.stdout == b""
