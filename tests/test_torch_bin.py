"""Reading pytorch_model.bin without torch: every value exact against torch's own tensors, views mapped
rather than copied, and any pickle that asks for more than a state dict needs refused before it runs."""
import json
import mmap
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import minineo
from minineo.errors import MinineoError
from minineo.weights.shards import open_checkpoint
from minineo.weights.torch_bin import TorchBinFile
from conftest import assert_close, hf_logits, hf_model

torch = pytest.importorskip("torch")


def stored(tensor):  # a torch tensor as the file stores it: bfloat16 as its uint16 bits
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def assert_reads_back(f, state_dict):
    """Every tensor exact, as stored and as float32, mapped and copied."""
    assert f.names() == list(state_dict)
    for name, tensor in state_dict.items():
        assert f.shape(name) == tuple(tensor.shape), name
        for copy in (False, True):
            assert np.array_equal(f.raw(name, copy), stored(tensor)), name
            if tensor.is_floating_point():
                assert np.array_equal(f.float32(name, copy), tensor.detach().float().numpy()), name


def rewrite_zip(src, dst, members=None, compression=zipfile.ZIP_STORED):
    """A copy of a .bin archive with `members` ({name: bytes or None to drop}) replaced."""
    members = members or {}
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", compression) as new:
        for info in old.infolist():
            data = members.get(info.filename, old.read(info))
            if data is not None:
                new.writestr(info.filename, data)
    return dst


def bin_of_pickle(path, data_pkl):
    """A zip laid out as torch.save lays it out, with the given bytes as its data.pkl."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return path


def model_dir(directory, dtype=torch.float32, seed=1):
    model = hf_model(seed=seed).to(dtype)
    directory.mkdir(exist_ok=True)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    model.config.save_pretrained(directory)
    return model


@pytest.mark.parametrize("dtype,name", [(torch.float32, "F32"), (torch.float16, "F16"), (torch.bfloat16, "BF16")],
                         ids=["float32", "float16", "bfloat16"])
def test_model_state_dict(tmp_path, dtype, name):
    model = model_dir(tmp_path, dtype)
    f = TorchBinFile(tmp_path / "pytorch_model.bin")
    assert {f.dtype(n) for n in f.names()} == {name}
    assert_reads_back(f, model.state_dict())
    # The tied head is wte's own storage in the file too: one mapped array, not two.
    assert np.shares_memory(f.raw("lm_head.weight"), f.raw("transformer.wte.weight"))


def test_integer_bool_and_scalar_tensors(tmp_path):
    state_dict = {"i8": torch.arange(-5, 5, dtype=torch.int8).reshape(2, 5),
                  "i64": torch.arange(7, dtype=torch.int64) * 10**12,
                  "u8": torch.arange(200, 206, dtype=torch.uint8),
                  "mask": torch.tril(torch.ones(4, 4, dtype=torch.bool))[None, None],   # old attn.bias
                  "masked_bias": torch.tensor(-1e9), "empty": torch.zeros(0, 3)}
    torch.save(state_dict, tmp_path / "x.bin")
    f = TorchBinFile(tmp_path / "x.bin")
    assert [f.dtype(n) for n in f.names()] == ["I8", "I64", "U8", "BOOL", "F32", "F32"]
    assert_reads_back(f, state_dict)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_strided_views_and_offsets(tmp_path, dtype):
    w = torch.randn(6, 7).to(dtype)
    state_dict = {"w": w, "transposed": w.t(), "slice": w[2:, 3:], "row": w[4], "column": w[:, 5],
                  "stepped": w[1::2, ::3], "parameter": torch.nn.Parameter(w[1:3].float())}
    assert state_dict["slice"].storage_offset() == 17 and not state_dict["transposed"].is_contiguous()
    torch.save(state_dict, tmp_path / "x.bin")
    f = TorchBinFile(tmp_path / "x.bin")
    assert_reads_back(f, state_dict)
    for name in ("transposed", "slice", "row", "column", "stepped"):   # views of w's one storage
        assert np.shares_memory(f.raw(name), f.raw("w")), name


def test_raw_maps_the_file_and_copy_reads_it(tmp_path):
    torch.save({"w": torch.randn(64, 64)}, tmp_path / "x.bin")
    f = TorchBinFile(tmp_path / "x.bin")
    view = base = f.raw("w")
    while getattr(base, "base", None) is not None:   # views of views, down to what owns the memory
        base = base.base
    assert isinstance(base, mmap.mmap)   # the file's mapping, not a copy
    assert not view.flags.owndata and not view.flags.writeable
    assert np.shares_memory(f.float32("w"), view)   # float32 of an F32 tensor is the same view
    copy = f.raw("w", copy=True)
    assert copy.flags.writeable and not np.shares_memory(copy, view)


def test_opening_maps_rather_than_reads(tmp_path):
    """A 200 MB tensor opened and viewed, in a fresh process: its peak memory stays far below 200 MB,
    and torch is never imported."""
    torch.save({"big": torch.ones(50_000_000), "t": torch.ones(1000, 2000).t()}, tmp_path / "big.bin")
    size_mb = (tmp_path / "big.bin").stat().st_size / 2**20
    script = ("import resource, sys\n"
              "from minineo.weights.torch_bin import TorchBinFile\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "f = TorchBinFile(sys.argv[1])\n"
              "views = [f.raw('big'), f.float32('big'), f.raw('t'), f.float32('t')[3]]\n"
              "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024\n"   # KiB -> MiB
              "print(grown, 'torch' in sys.modules)\n")
    root = Path(minineo.__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "big.bin")], cwd=root,
                         capture_output=True, text=True, check=True)
    (tmp_path / "big.bin").unlink()   # pytest keeps the last runs' tmp_path: not 200 MB of them
    grown_mb, torch_imported = out.stdout.split()
    print(f"file {size_mb:.0f} MiB, peak memory grew {grown_mb} MiB")
    assert size_mb > 190 and float(grown_mb) < 20 and torch_imported == "False"


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_rezipped_archive(tmp_path, compression):
    """Zipped again by Python: no 64-byte padding, so storages start unaligned, or compressed."""
    w = torch.randn(5, 3, dtype=torch.float64)
    state_dict = {"w": w, "t": w.t(), "h": torch.randn(9).half(), "l": torch.arange(3)}
    torch.save(state_dict, tmp_path / "x.bin")
    f = TorchBinFile(rewrite_zip(tmp_path / "x.bin", tmp_path / "y.bin", compression=compression))
    assert_reads_back(f, state_dict)


def test_sharded_checkpoint(tmp_path):
    state_dict = model_dir(tmp_path / "one").state_dict()
    names = list(state_dict)
    halves = {"pytorch_model-00001-of-00002.bin": names[:20], "pytorch_model-00002-of-00002.bin": names[20:]}
    weight_map = {}
    for file, part in halves.items():
        torch.save({n: state_dict[n] for n in part}, tmp_path / file)
        weight_map.update(dict.fromkeys(part, file))
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    files = open_checkpoint(tmp_path)
    assert list(files) == names
    for name, tensor in state_dict.items():
        assert files[name].path.name == weight_map[name]
        assert np.array_equal(files[name].float32(name), tensor.numpy()), name
    # The first shard holds wte and the second lm_head: each file its own copy, both still exact.
    assert files["lm_head.weight"].path != files["transformer.wte.weight"].path


def test_single_file_directory(tmp_path):
    state_dict = model_dir(tmp_path).state_dict()
    files = open_checkpoint(tmp_path)
    assert list(files) == list(state_dict) and len({id(f) for f in files.values()}) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("sharded", [False, True], ids=["one file", "shards"])
def test_logits_match_transformers(tmp_path, dtype, sharded):
    model = model_dir(tmp_path, dtype)
    if sharded:   # as older save_pretrained wrote big models: shards and pytorch_model.bin.index.json
        state = torch.load(tmp_path / "pytorch_model.bin")
        names = sorted(state)
        halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
        for file, part in halves.items():
            torch.save({n: state[n] for n in part}, tmp_path / file)
        (tmp_path / "pytorch_model.bin").unlink()
        (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(
            {"weight_map": {n: file for file, part in halves.items() for n in part}}))
    else:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "pytorch_model.bin"]
    ids = np.random.default_rng(0).integers(0, 300, (2, 11))
    assert_close(minineo.load(tmp_path)(ids), hf_logits(model.float(), ids), f"logits from .bin, {dtype}, sharded={sharded}")


def test_quantize_takes_a_bin_source(tmp_path):
    from minineo.weights.int8_copy import quantize_checkpoint
    model_dir(tmp_path / "src")
    quantize_checkpoint(tmp_path / "src", tmp_path / "int8")
    ids = np.random.default_rng(0).integers(0, 300, (2, 11))
    assert_close(minineo.load(tmp_path / "int8")(ids), minineo.load(tmp_path / "src", int8=True)(ids),
                 "int8 copy of a .bin checkpoint vs quantizing it at load", tol=0)


@pytest.mark.parametrize("files, wants_bin", [
    (["config.json", "model.safetensors", "pytorch_model.bin"], False),
    (["config.json", "pytorch_model.bin"], True),
])
def test_hub_downloads_bin_files_only_without_safetensors(monkeypatch, tmp_path, files, wants_bin):
    import huggingface_hub
    from minineo.weights import hub

    asked = {}
    monkeypatch.setattr(hub, "hub_files", lambda repo_id: files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, allow_patterns: asked.setdefault("patterns", allow_patterns) and str(tmp_path))
    assert hub.download("someone/gpt-neo-finetune", "someone/gpt-neo-finetune:") == tmp_path
    assert ("pytorch_model*.bin" in asked["patterns"]) == wants_bin and "*.safetensors" in asked["patterns"]


def call_pickle(module, name, arg):
    """Pickle opcodes that call module.name(*arg), the global spelled exactly so (pickle.dumps would
    spell os.system posix.system)."""
    return b"c" + f"{module}\n{name}\n".encode() + pickle.dumps(arg, protocol=2)[2:-1] + b"R"


def payload_pickle(module, name, arg):  # {"w": module.name(*arg)}
    return b"\x80\x02}X\x01\x00\x00\x00w" + call_pickle(module, name, arg) + b"s."


def payloads(marker):
    return {"os.system": payload_pickle("os", "system", (f"touch {marker}",)),
            "posix.system": payload_pickle("posix", "system", (f"touch {marker}",)),
            "builtins.eval": payload_pickle("builtins", "eval", (f"open({str(marker)!r}, 'w').close()",)),
            "subprocess.Popen": payload_pickle("subprocess", "Popen", (["touch", str(marker)],))}


@pytest.mark.parametrize("target", ["os.system", "posix.system", "builtins.eval", "subprocess.Popen"])
def test_malicious_pickle_is_refused(tmp_path, target):
    marker = tmp_path / "ran"
    data_pkl = payloads(marker)[target]
    path = bin_of_pickle(tmp_path / "pytorch_model.bin", data_pkl)
    with pytest.raises(MinineoError, match=rf"pytorch_model.bin: refusing to load: .* {target}, "):
        TorchBinFile(path)
    with pytest.raises(MinineoError, match=rf"refusing to load: .* {target}, "):
        open_checkpoint(tmp_path)
    assert not marker.exists()
    # The payload is live: plain pickle runs it (which is why minineo never uses plain pickle).
    result = pickle.loads(data_pkl)["w"]
    if target == "subprocess.Popen":
        result.wait()
    assert marker.exists()


def test_malicious_pickle_among_tensors(tmp_path):
    """A real checkpoint whose data.pkl also asks for os.system after its tensors: refused all the same."""
    torch.save({"w": torch.ones(3)}, tmp_path / "x.bin")
    with zipfile.ZipFile(tmp_path / "x.bin") as archive:
        real = archive.read("x/data.pkl")
    evil = call_pickle("os", "system", (f"touch {tmp_path / 'ran'}",))
    data_pkl = real[:-1] + b"X\x04\x00\x00\x00evil" + evil + b"s."   # one more entry before STOP
    path = rewrite_zip(tmp_path / "x.bin", tmp_path / "y.bin", {"x/data.pkl": data_pkl})
    with pytest.raises(MinineoError, match="os.system"):
        TorchBinFile(path)
    assert not (tmp_path / "ran").exists()


def test_legacy_format(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "old.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(MinineoError, match=r"old.bin: .*legacy .*safe_serialization=True"):
        TorchBinFile(tmp_path / "old.bin")
    # A bare pickle with a payload reads as the legacy format too, and nothing in it runs.
    marker = tmp_path / "ran"
    (tmp_path / "pytorch_model.bin").write_bytes(payloads(marker)["os.system"])
    with pytest.raises(MinineoError, match="pytorch_model.bin: .*legacy"):
        open_checkpoint(tmp_path)
    assert not marker.exists()


def test_truncated_and_corrupt_files(tmp_path):
    torch.save({"w": torch.randn(40, 40), "b": torch.randn(40)}, tmp_path / "x.bin")
    data = (tmp_path / "x.bin").read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(MinineoError, match="cut.bin: unreadable zip archive, truncated or corrupt"):
        TorchBinFile(cut)
    for end in range(0, len(data), 97):   # cut anywhere: always one MinineoError, never a traceback
        cut.write_bytes(data[:end])
        with pytest.raises(MinineoError, match="cut.bin"):
            TorchBinFile(cut)
    (tmp_path / "text.bin").write_text("hello")
    with pytest.raises(MinineoError, match="text.bin: not a PyTorch checkpoint"):
        TorchBinFile(tmp_path / "text.bin")
    with pytest.raises(MinineoError, match="absent.bin: no such file"):
        TorchBinFile(tmp_path / "absent.bin")


def test_mangled_pickles_fail_cleanly(tmp_path):
    """data.pkl cut short or with bytes changed: a MinineoError (or, by luck, a valid file), never another error."""
    torch.save({"w": torch.randn(4, 6), "t": torch.randn(6, 4).t(), "h": torch.ones(3).half()}, tmp_path / "x.bin")
    with zipfile.ZipFile(tmp_path / "x.bin") as archive:
        real = archive.read("x/data.pkl")
    rng = np.random.default_rng(0)
    for trial in range(150):
        mangled = bytearray(real[:rng.integers(len(real))] if trial % 3 == 0 else real)
        for i in rng.integers(len(mangled), size=trial % 3 + 1 if trial % 3 else 0):
            mangled[i] = rng.integers(256)
        path = rewrite_zip(tmp_path / "x.bin", tmp_path / "m.bin", {"x/data.pkl": bytes(mangled)})
        try:
            f = TorchBinFile(path)
        except MinineoError as e:
            assert "m.bin" in str(e) and "\n" not in str(e)
            continue
        for name in f.names():
            f.raw(name), f.raw(name, copy=True)


def test_damaged_bytes_fail_cleanly(tmp_path):
    """A few bytes changed anywhere in the file: a MinineoError (or, where only values changed, a file
    that reads), never a traceback. Damaged zips raise a zoo of exceptions inside zipfile."""
    torch.save({"w": torch.randn(8, 6), "t": torch.randn(6, 8).t(), "h": torch.ones(3).half()}, tmp_path / "x.bin")
    data = (tmp_path / "x.bin").read_bytes()
    rng = np.random.default_rng(0)
    for trial in range(400):
        damaged = bytearray(data)
        damaged[rng.integers(len(data))] = rng.integers(256)
        (tmp_path / "d.bin").write_bytes(damaged)
        try:
            f = TorchBinFile(tmp_path / "d.bin")
            for name in f.names():
                f.raw(name), f.raw(name, copy=True), f.float32(name)
        except MinineoError as e:
            assert "d.bin" in str(e) and "\n" not in str(e)


def test_missing_and_short_storages(tmp_path):
    torch.save({"w": torch.ones(4, 4), "b": torch.ones(4)}, tmp_path / "x.bin")
    path = rewrite_zip(tmp_path / "x.bin", tmp_path / "y.bin", {"x/data/1": None})
    with pytest.raises(MinineoError, match="y.bin: tensor b: storage 1 is missing"):
        TorchBinFile(path)
    path = rewrite_zip(tmp_path / "x.bin", tmp_path / "y.bin", {"x/data/0": b"\0" * 60})
    with pytest.raises(MinineoError, match="y.bin: tensor w reaches past the end of storage 0"):
        TorchBinFile(path)


@pytest.mark.parametrize("saved,message", [
    ({"model": {"w": torch.ones(2)}, "epoch": 3}, "entry 'model' is a dict, not a tensor"),
    ([torch.ones(2)], "holds a list, not a state dict"),
    ({"c": torch.ones(2, dtype=torch.complex64)}, r"does not read \(torch.ComplexFloatStorage\)"),
    ({"u": torch.ones(2, dtype=torch.uint16)}, r"does not read \(torch._utils._rebuild_tensor_v3\)"),
])
def test_not_a_state_dict_of_supported_tensors(tmp_path, saved, message):
    torch.save(saved, tmp_path / "x.bin")
    with pytest.raises(MinineoError, match="x.bin: .*" + message):
        TorchBinFile(tmp_path / "x.bin")


@pytest.mark.parametrize("shard", ["../outside.bin", "/etc/passwd", "sub/inner.bin", "..", ""])
def test_index_names_only_files_in_the_directory(tmp_path, shard):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "sub").mkdir()
    for path in (tmp_path / "outside.bin", tmp_path / "model" / "sub" / "inner.bin"):   # real checkpoints
        torch.save({"w": torch.ones(2)}, path)
    (tmp_path / "model" / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(MinineoError, match=r"pytorch_model.bin.index.json: shard name .* is not a plain file name"):
        open_checkpoint(tmp_path / "model")


def test_index_problems(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "a.bin")
    index = tmp_path / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "a.bin", "v": "b.bin"}}))
    with pytest.raises(MinineoError, match=r"b.bin: no such file \(a shard listed in pytorch_model.bin.index.json\)"):
        open_checkpoint(tmp_path)
    index.write_text(json.dumps({"weight_map": {"w": "a.bin", "v": "a.bin"}}))
    with pytest.raises(MinineoError, match=r"a.bin: missing tensor v \(listed in pytorch_model.bin.index.json\)"):
        open_checkpoint(tmp_path)
    index.write_text(json.dumps({"weight_map": ["a.bin"]}))
    with pytest.raises(MinineoError, match="pytorch_model.bin.index.json: not a valid index"):
        open_checkpoint(tmp_path)
    index.unlink()
    with pytest.raises(MinineoError, match="no model.safetensors or pytorch_model.bin"):
        open_checkpoint(tmp_path)
