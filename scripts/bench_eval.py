"""Time a multiple-choice task on minineo's lm-eval backend against lm-eval's `hf` backend, in one run.

    python scripts/bench_eval.py [--docs 40] [--batch-size 8]

The model: GPT-Neo 125M's shape (12 layers, d = 768, GPT-2's 50,257 tokens, 2,048 positions) with
random weights, written once by transformers and read by both backends. The task: HellaSwag's shape,
a context of ~70-110 tokens and four endings of ~15-30 tokens per document, cut from the bundled
model's held-out play, defined as a local lm-eval task. Both backends run the same requests through
lm-eval's simple_evaluate; the script prints each one's time, the speed-up, and checks that both
give the same accuracy and every log-likelihood to 1e-4 relative.
Needs torch, transformers and lm-eval[hf] (the test oracles).
"""
import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import lm_eval
import torch
import transformers
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minineo.fast.threads import get_threads  # noqa: E402
from minineo.text import harness  # noqa: E402,F401
from minineo.weights.hub import BUNDLED  # noqa: E402
from minineo.weights.tokenizer import GPT2_BPE  # noqa: E402


def make_docs(n):
    words = (BUNDLED.parent / "neo-shakespeare-heldout.txt").read_text().split()
    docs, at = [], 0
    for i in range(n):
        context = " ".join(words[at:at + 60 + 5 * (i % 7)])
        at += 80
        endings = [" ".join(words[at + 30 * k: at + 30 * k + 12 + 2 * ((i + k) % 5)]) for k in range(4)]
        at += 120
        docs.append({"ctx": context, "endings": endings, "label": i % 4})
    return docs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    torch.manual_seed(0)
    config = transformers.GPTNeoConfig(vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12,
                                       attention_types=[[["global", "local"], 6]], window_size=256,
                                       max_position_embeddings=2048, bos_token_id=50256, eos_token_id=50256)
    transformers.GPTNeoForCausalLM(config).save_pretrained(work / "model")
    for name in ("vocab.json", "merges.txt"):
        (work / "model" / name).write_bytes((GPT2_BPE / name).read_bytes())
    (work / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in make_docs(args.docs)))
    (work / "tasks").mkdir()
    (work / "tasks" / "mc.yaml").write_text(
        f"task: mc_bench\noutput_type: multiple_choice\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {work / 'docs.jsonl'}\ntest_split: test\ndoc_to_text: '{{{{ctx}}}}'\n"
        "doc_to_choice: '{{endings}}'\ndoc_to_target: '{{label}}'\nmetric_list:\n  - metric: acc\n"
        "    aggregation: mean\n    higher_is_better: true\n")
    manager = TaskManager(include_path=str(work / "tasks"), include_defaults=False)

    def run(model, batch_size=None):
        start = time.perf_counter()
        out = lm_eval.simple_evaluate(model=model, tasks=["mc_bench"], task_manager=manager, bootstrap_iters=0,
                                      log_samples=True, batch_size=batch_size)
        seconds = time.perf_counter() - start
        lls = [x[0][0] for s in sorted(out["samples"]["mc_bench"], key=lambda s: s["doc_id"]) for x in s["resps"]]
        return seconds, out["results"]["mc_bench"]["acc,none"], lls

    timings = {}
    hf = HFLM(pretrained=str(work / "model"), device="cpu", batch_size=args.batch_size, dtype="float32")
    timings["hf"] = run(hf)
    del hf
    ours = harness.MinineoLM(pretrained=str(work / "model"), batch_size=args.batch_size)
    timings["minineo"] = run(ours)
    n = len(timings["hf"][2])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    print(f"CPU: {cpu}, {os.cpu_count()} logical CPUs; torch threads {torch.get_num_threads()}, "
          f"minineo threads {get_threads()}")
    print(f"task: {args.docs} documents x 4 endings = {n} loglikelihood requests, batch size {args.batch_size}")
    for name, (seconds, acc, _) in timings.items():
        print(f"{name:8s} {seconds:7.1f} s  ({n / seconds:5.1f} requests/s)  acc {acc:.4f}")
    worst = max(abs(a - b) / abs(b) for a, b in zip(timings["minineo"][2], timings["hf"][2]))
    print(f"speed-up {timings['hf'][0] / timings['minineo'][0]:.2f}x; largest relative log-likelihood "
          f"difference {worst:.2g}; acc equal: {timings['hf'][1] == timings['minineo'][1]}")
    assert worst <= 1e-4 and math.isclose(timings["hf"][1], timings["minineo"][1])


if __name__ == "__main__":
    main()
