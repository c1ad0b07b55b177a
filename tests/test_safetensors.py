"""minineo reads and writes the safetensors format as the `safetensors` package does: what minineo
writes, safetensors.numpy reads identically, and the reverse (every dtype minineo reads, metadata,
empty and scalar tensors)."""
import json
import struct

import numpy as np
import safetensors.numpy as st
from safetensors import safe_open

from minineo.weights.safetensors_io import DTYPES, SafetensorsFile, bfloat16_to_float32, write_safetensors


def tensors():  # one tensor of every dtype NumPy can hold, with odd shapes, and an empty and a scalar one
    rng = np.random.default_rng(0)
    made = {f"t.{np.dtype(t).name}": (rng.standard_normal((3, 5, 2)) * 100).astype(t)
            for name, t in DTYPES.items() if name != "BF16"}
    made["t.bool"] = rng.random((7,)) < 0.5
    made["empty"] = np.zeros((0, 4), np.float32)
    made["scalar"] = np.array(2.5, np.float32)
    return made


def assert_same(ours, theirs, what):
    assert list(ours) == list(theirs) or sorted(ours) == sorted(theirs), f"{what}: names {sorted(ours)} != {sorted(theirs)}"
    for name in ours:
        a, b = ours[name], theirs[name]
        assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {name} {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        mismatch = np.flatnonzero(a.reshape(-1) != b.reshape(-1))
        assert not mismatch.size, f"{what}: {name} differs first at flat index {mismatch[0]}"


def test_what_minineo_writes_safetensors_reads(tmp_path):
    path = tmp_path / "ours.safetensors"
    written = tensors()
    write_safetensors(path, written, metadata={"format": "pt", "note": "minineo"})
    assert_same(st.load_file(str(path)), written, "safetensors reading minineo's file")
    with safe_open(str(path), framework="numpy") as f:
        assert f.metadata() == {"format": "pt", "note": "minineo"}


def test_what_safetensors_writes_minineo_reads(tmp_path):
    path = tmp_path / "theirs.safetensors"
    written = tensors()
    st.save_file(written, str(path), metadata={"format": "pt"})
    f = SafetensorsFile(path)
    assert f.metadata == {"format": "pt"}
    assert_same({name: f.raw(name) for name in f.names()}, written, "minineo reading safetensors' file")
    assert_same({name: f.raw(name, copy=True) for name in f.names()}, written, "minineo, copy=True")
    assert not f.raw("t.float32").flags.writeable   # a view of the mapped file, not a copy


def test_a_file_written_by_hand_from_the_format_description(tmp_path):
    # The layout safetensors_io.py describes, byte by byte: header length, JSON header, data. BF16 is
    # the top 16 bits of a float32 (NumPy has no bfloat16); 1.0, -2.5 and 3.140625 are exact in it.
    values = np.array([1.0, -2.5, 3.140625], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    i8 = np.array([[-127, 0, 5], [127, 1, -1]], np.int8).tobytes()
    header = json.dumps({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]},
                         "q": {"dtype": "I8", "shape": [2, 3], "data_offsets": [6, 12]}}).encode()
    path = tmp_path / "by_hand.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bf16 + i8)
    f = SafetensorsFile(path)
    np.testing.assert_array_equal(f.float32("x"), values)
    np.testing.assert_array_equal(f.raw("q"), np.frombuffer(i8, np.int8).reshape(2, 3))
    np.testing.assert_array_equal(bfloat16_to_float32(np.frombuffer(bf16, "<u2")), values)
