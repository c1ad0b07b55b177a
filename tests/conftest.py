"""Checkpoints for the tests: built by transformers where it is installed (the oracle), else by
minineo's NumPy writer; every comparison prints the largest difference it saw."""
import dataclasses
import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from minineo.model.config import Config
from minineo.weights.random_checkpoint import write_random_checkpoint
from minineo.weights.safetensors_io import SafetensorsFile, write_safetensors
from minineo.weights.tokenizer import GPT2_BPE

TOLERANCE = 1e-4   # max abs logit difference allowed against transformers in float32
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name):
    """A dev tool of scripts/ (not part of the package) as a module, for the tests of what it measures or makes."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def every_choice_forced(**chosen):
    """MININEO_CHOICES naming every choice, so that nothing is measured: these, the others at their defaults.
    A choice added to minineo.fast.choices is forced here too, without a test naming it."""
    from minineo.fast.choices import Choices
    return ",".join(f"{name}={value}" for name, value in dataclasses.asdict(Choices(**chosen)).items())


def tiny_config(**overrides):
    base = dict(vocab_size=300, hidden_size=48, num_layers=4, num_heads=4, intermediate_size=192,
                window_size=5, attention_layers=("global", "local") * 2, max_position_embeddings=64,
                eos_token_id=299)
    base.update(overrides)
    return Config(**base)


@pytest.fixture
def numpy_checkpoint(tmp_path):
    """A directory with a random-weight checkpoint, written without torch."""
    def make(seed=0, **overrides):
        return write_random_checkpoint(tmp_path / f"ckpt{seed}", tiny_config(**overrides), seed=seed)
    return make


def hf_config(**overrides):
    """transformers' GPTNeoConfig for a tiny model; attention_types in the Hub's nested form."""
    transformers = pytest.importorskip("transformers")
    base = dict(vocab_size=300, hidden_size=48, num_layers=4, num_heads=4, window_size=5,
                attention_types=[[["global", "local"], 2]], max_position_embeddings=64,
                bos_token_id=299, eos_token_id=299)
    base.update(overrides)
    return transformers.GPTNeoConfig(**base)


def hf_model(directory=None, seed=0, **overrides):
    """A random GPTNeoForCausalLM (saved to directory when given), with biases and norms perturbed."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    model = transformers.GPTNeoForCausalLM(hf_config(**overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:   # the default init leaves these 0 and 1
                p.add_(0.05 * torch.randn_like(p))
    if directory is not None:
        model.save_pretrained(directory)
    return model


def hf_logits(model, ids, attention_mask=None, position_ids=None):
    torch = pytest.importorskip("torch")
    kwargs = {}
    if attention_mask is not None:
        kwargs["attention_mask"] = torch.tensor(attention_mask)
    if position_ids is not None:
        kwargs["position_ids"] = torch.tensor(position_ids)
    with torch.no_grad():
        return model(torch.tensor(ids), **kwargs).logits.float().numpy()


def assert_close(ours, ref, what, tol=TOLERANCE, where=None):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    diff = np.abs(ours.astype(np.float64) - ref)
    if where is not None:
        diff = diff[where]
    worst = float(diff.max())
    print(f"{what}: max abs difference {worst:.3g}")
    assert worst <= tol, (f"{what}: max abs difference {worst:.3g} > {tol:g} at index "
                          f"{np.unravel_index(diff.argmax(), diff.shape)}")


def text_checkpoint(directory, max_position_embeddings=256):
    """A random model with GPT-2's real 50257-token vocabulary, tiny everywhere else: for text in, text out."""
    config = Config(vocab_size=50257, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                    window_size=8, attention_layers=("global", "local"),
                    max_position_embeddings=max_position_embeddings)
    directory = write_random_checkpoint(directory, config, seed=0)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_BPE / name, directory)
    return directory


def random_ids(shape, vocab=300, seed=0):  # token ids for the tiny models (vocab 300)
    return np.random.default_rng(seed).integers(0, vocab, shape)


def rewrite_tensors(directory, change):
    """Rewrite directory/model.safetensors through change({name: array}) -> {name: array}, metadata kept."""
    path = directory / "model.safetensors"
    f = SafetensorsFile(path)
    tensors = change({name: np.array(f.raw(name)) for name in f.names()})
    write_safetensors(path, tensors, metadata=f.metadata or None)


def bytes_to_unicode():
    """GPT-2's table, written here independently of minineo's: printable bytes map to themselves,
    the rest to code points from 256 up, in order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return {b: chr(c) for b, c in [*zip(printable, printable), *zip(extra, range(256, 256 + len(extra)))]}


# What installs each module a test skips without: the oracles and tools of pyproject's extras.
INSTALLS = {"torch": "compare", "transformers": "compare", "lm_eval": "compare", "transformer_lens": "compare",
            "ray": "ray", "datasets": "eval",
            "nbclient": "test", "nbformat": "test", "ipykernel": "test", "matplotlib": "test"}
MISSING_MODULE = re.compile(r"could not import '([\w.]+)'")


def skip_summary(reasons):
    """The skip reasons of a run -> one line naming the missing modules and the command that installs
    them, or None when nothing was skipped for a missing module."""
    missing = sorted({m.group(1).split(".")[0] for m in map(MISSING_MODULE.search, reasons) if m})
    if not missing:
        return None
    extras = sorted({INSTALLS[name] for name in missing if name in INSTALLS})
    others = [name.replace("_", "-") for name in missing if name not in INSTALLS]
    command = " && ".join(filter(None, [f'pip install -e ".[{",".join(extras)}]"' if extras else "",
                                        f"pip install {' '.join(others)}" if others else ""]))
    counted = sum(bool(MISSING_MODULE.search(r)) for r in reasons)
    return (f"{counted} test{'s' * (counted != 1)} skipped because {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed (the oracles minineo is compared with): {command}")


def pytest_terminal_summary(terminalreporter):
    reasons = [str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
               for report in terminalreporter.stats.get("skipped", [])]
    line = skip_summary(reasons)
    if line:
        terminalreporter.write_line(line, yellow=True, bold=True)
