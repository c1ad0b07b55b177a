"""Measure the bundled model as its model card reports it: held-out perplexity and nats per character,
the CLI's default sampling (blank lines, words per 80 tokens) and greedy decoding.

    python scripts/measure_bundled.py [--model DIR] [--transformers]

Perplexity is `python -m minineo.perplexity`'s (context 256, stride 64) on the held-out play; nats per
character divide the same total NLL by the file's characters, which no tokenizer or context can flatter.
--transformers repeats the perplexity with transformers' GPTNeoForCausalLM on the same file and windows.
"""
import argparse
import math
from pathlib import Path

import minineo
from minineo.commands.generate import DEFAULT_TEMPERATURE
from minineo.text.perplexity import score_tokens, windows

REPO = Path(__file__).resolve().parent.parent
HELDOUT = REPO / "minineo" / "data" / "neo-shakespeare-heldout.txt"
# A speaker's name, then the first words of a line, as the plays print them.
PROMPTS = ["ROMEO.\nBut soft,", "KING HENRY.\nNow,", "HAMLET.\nWhat is"]
SEEDS = range(10)
NEW_TOKENS = 80


def transformers_nll(directory, ids, context, stride):  # the same windows, scored by transformers
    import torch
    from transformers import GPTNeoForCausalLM
    model = GPTNeoForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    total = 0.0
    for begin, end, first in windows(len(ids), context, stride):
        x = torch.tensor([ids[begin:end - 1]])
        with torch.no_grad():
            logits = model(x).logits[0, first - 1 - begin:].double()
        targets = torch.tensor(ids[first:end])
        total += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
    return total


def default_sampling(model):  # -> (share of blank lines, words per run) of the CLI's default sampling
    blank = lines = words = 0
    for prompt in PROMPTS:
        for seed in SEEDS:   # the CLI's defaults: temperature 0.8, top-k 50, here 80 new tokens
            new = minineo.generate(model, prompt, max_new_tokens=NEW_TOKENS, do_sample=True,
                                   temperature=DEFAULT_TEMPERATURE, top_k=50, seed=seed)
            generated = new.split("\n")[1:]   # the lines that begin in the generated text
            blank += sum(not line.strip() for line in generated)
            lines += len(generated)
            words += len(new.split())
    return blank / max(lines, 1), words / (len(PROMPTS) * len(SEEDS))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    p.add_argument("--transformers", action="store_true", help="also score the held-out play with transformers")
    args = p.parse_args()
    model = minineo.load(args.model)
    text = HELDOUT.read_text()
    ids = model.tokenizer.encode(text)
    score = score_tokens(model, ids, context=256, stride=64)
    print(f"held-out {HELDOUT.name}: {len(text)} characters, {len(ids)} tokens")
    print(f"  minineo:      perplexity {score.perplexity:.2f}, {score.nll / score.tokens:.4f} nats/token, "
          f"{score.nll / len(text):.4f} nats/character ({score.tokens} tokens scored, context 256, stride 64)")
    if args.transformers:
        nll = transformers_nll(model.source, ids, 256, 64)
        print(f"  transformers: perplexity {math.exp(nll / score.tokens):.2f}, {nll / len(text):.4f} nats/character")

    blank_share, words = default_sampling(model)
    print(f"default sampling, {len(PROMPTS) * len(SEEDS)} runs of {NEW_TOKENS} tokens: {blank_share:.1%} blank "
          f"lines, {words:.1f} words per {NEW_TOKENS} tokens")
    for prompt in PROMPTS:
        print(f"greedy {prompt!r}: {minineo.generate(model, prompt, max_new_tokens=40)!r}")


if __name__ == "__main__":
    main()
