"""One run of one benchmark configuration, in a process of its own: what `python -m minineo.bench`
starts for every run, so that each run's peak memory is its own.

    python -m minineo.commands.measure_configuration '{"engine": "minineo", "path": "...", ...}'

The JSON spec names the engine (minineo or transformers), the checkpoint, the threads, the prompt
lengths, the decode steps and batches; the result is one line of JSON on stdout. In this process:
- load: the time to open the checkpoint (after the first run, from the page cache);
- prefill: one forward pass over a prompt of P random tokens into an empty KV cache, with logits
  for the last position only, as generation needs; P / seconds, the median of PREFILL_REPEATS
  passes (a single pass of a 125M prompt took 505 to 648 tok/s in two runs of the same process);
- decode: after the first prompt, new_tokens greedy steps of one token each, with the KV cache;
  only the steps are timed; tokens / seconds;
after one untimed warm-up that reads every weight once. The bench shows the last line this process
writes to stderr when it fails: `minineo: error: ...`, or the exception line of a traceback.
"""
import dataclasses
import json
import statistics
import sys
import time

import numpy as np

from ..errors import MinineoError
from .common import run_command

SEED = 0
PREFILL_REPEATS = 3


def prompt_ids(vocab_size, length):  # the same random prompt for every engine: [1, length]
    return np.random.default_rng(SEED).integers(0, vocab_size, (1, length))


class Minineo:
    def __init__(self, path, threads):
        from ..fast.threads import set_threads
        set_threads(threads)
        self.path = path

    def load(self):
        from ..weights import load
        self.model = load(self.path)
        return self.model.config.vocab_size

    def prefill(self, ids):  # -> the cache, and the greedy next token [1, 1]
        cache = self.model.new_cache(len(ids))
        h = self.model.forward(ids, cache=cache)
        return cache, self.model.logits(h[:, -1]).argmax(-1)[:, None]

    def step(self, cache, token):
        h = self.model.forward(token, cache=cache)
        return self.model.logits(h[:, -1]).argmax(-1)[:, None]

    def weight_bytes(self):  # bytes a decode step reads: every weight but the position table (one row)
        from ..model.checks import named_weights
        return sum(w.nbytes for name, w in named_weights(self.model.params) if name != "wpe")

    def versions(self):
        from ..fast import choices
        return {"choices": dataclasses.asdict(choices.current())}


class Transformers:
    def __init__(self, path, threads):
        import torch
        import transformers
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        torch.set_num_threads(threads)
        self.torch, self.transformers, self.path = torch, transformers, path

    def load(self):
        model = self.transformers.GPTNeoForCausalLM.from_pretrained(self.path, dtype=self.torch.float32)
        self.model = model.eval()
        return self.model.config.vocab_size

    def prefill(self, ids):
        with self.torch.inference_mode():
            out = self.model(input_ids=self.torch.from_numpy(ids), use_cache=True, logits_to_keep=1)
        return out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)

    def step(self, cache, token):
        with self.torch.inference_mode():
            out = self.model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1, keepdim=True)

    def weight_bytes(self):
        return sum(p.numel() * p.element_size() for name, p in self.model.named_parameters() if "wpe" not in name)

    def versions(self):
        return {"torch": self.torch.__version__, "transformers": self.transformers.__version__}


def peak_memory_bytes():  # this process's peak resident memory, or None where the OS does not say
    try:
        import resource   # Unix only
    except ImportError:
        pass
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024   # macOS counts bytes, Linux KiB
    try:
        import psutil     # Windows: the peak working set
        return getattr(psutil.Process().memory_info(), "peak_wset", None)
    except ImportError:
        return None


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def measure(engine, path, threads, prompts, new_tokens, batches):
    """Everything measured in one run of one configuration, as a dict."""
    runner = (Minineo if engine == "minineo" else Transformers)(path, threads)
    load_s, vocab_size = timed(runner.load)
    ids = {p: prompt_ids(vocab_size, p) for p in prompts}

    cache, token = runner.prefill(ids[prompts[0]][:, :8])   # warm-up: reads every weight once
    runner.step(cache, token)
    prefill, decode, tokens = {}, {}, []
    for p in prompts:
        seconds = [timed(runner.prefill, ids[p])[0] for _ in range(PREFILL_REPEATS)]
        prefill[str(p)] = p / statistics.median(seconds)
    for b in batches if new_tokens else []:
        # b copies of the first prompt decode together: each step reads every weight once for all b rows
        cache, token = runner.prefill(np.repeat(ids[prompts[0]], b, axis=0))
        started, row0 = time.perf_counter(), []
        for _ in range(new_tokens):
            row0.append(int(token[0, 0]))
            token = runner.step(cache, token)
        decode[str(b)] = b * new_tokens / (time.perf_counter() - started)
        tokens = tokens or row0
    return {"load_s": load_s, "prefill": prefill, "decode": decode, "tokens": tokens,
            "peak_rss_bytes": peak_memory_bytes(), "weight_bytes": runner.weight_bytes(),
            "versions": runner.versions()}


def run(argv):
    try:
        spec = json.loads(argv[0])
        args = [spec[k] for k in ("engine", "path", "threads", "prompts", "new_tokens", "batches")]
    except (IndexError, ValueError, KeyError, TypeError):
        raise MinineoError("expected one argument, a JSON object with engine, path, threads, prompts, "
                           "new_tokens and batches (python -m minineo.bench writes it)") from None
    result = measure(*args)
    print(json.dumps(result))


def main(argv=None):
    return run_command(run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
