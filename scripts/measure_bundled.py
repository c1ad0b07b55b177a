"""Measure the bundled model as its model card reports it: held-out perplexity and nats per character,
the CLI's default sampling (blank lines, words per 80 tokens) and greedy decoding.

    python scripts/measure_bundled.py [--model DIR] [--transformers] [--seeds N] [--temperature T] [--top-k K]
                                      [--why-blank]

Perplexity is `python -m minineo.perplexity`'s (context 256, stride 64) on the held-out play; nats per
character divide the same total NLL by the file's characters, which no tokenizer or context can flatter.
--transformers repeats the perplexity with transformers' GPTNeoForCausalLM on the same file and windows.
--seeds samples each prompt with seeds 0..N-1 (default 10, issue #10's count); more seeds, less noise.
--temperature and --top-k change the sampling from the CLI's defaults (0.8 and 50).
--why-blank reads the held-out play token by token and compares how often it breaks a line, ends a
sentence or ends a speech with the probability the sampler gives each, at temperature 1 and at the CLI's.
"""
import argparse
import math
import re
from pathlib import Path

import numpy as np

import minineo
from minineo.commands.generate import CLI_TEMPERATURE
from minineo.model.attention import softmax
from minineo.text.settings import Settings
from minineo.text.sliding_window import score_tokens, windows
from minineo.text.sampling import process_logits

REPO = Path(__file__).resolve().parent.parent
HELDOUT = REPO / "minineo" / "data" / "neo-shakespeare-heldout.txt"
# A speaker's name, then the first words of a line, as the plays print them.
PROMPTS = ["ROMEO.\nBut soft,", "KING HENRY.\nNow,", "HAMLET.\nWhat is"]
SEEDS = range(10)
NEW_TOKENS = 80
CONTEXT, STRIDE = 256, 64   # the perplexity's windows, as the model card reports them
CLI_SAMPLER = dict(temperature=CLI_TEMPERATURE, top_k=Settings.top_k)   # the CLI's defaults
SAMPLERS = {"T 1": dict(temperature=1.0, top_k=0), "CLI": CLI_SAMPLER}
HEADING = re.compile(r"[A-Z][A-Z' ]+\.")   # a speaker heading, as the plays print it
# --why-blank's kinds of token, each a whole token: what ends a line, a sentence, a clause.
TOKEN_KINDS = {"line break": r"\n", "sentence end (. ? !)": r"[.?!]+", "clause end (, ; :)": r"[,;:]+"}


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


def sample_prompts(model, seeds=SEEDS, sampler=CLI_SAMPLER):  # -> [(prompt, generated text)], 80 new tokens each
    return [(prompt, minineo.generate(model, prompt, max_new_tokens=NEW_TOKENS, do_sample=True, seed=seed,
                                      **sampler)) for prompt in PROMPTS for seed in seeds]


def sampling_statistics(samples):  # [(prompt, generated text)] -> (share of blank lines, words per sample)
    generated = [line for _, new in samples for line in new.split("\n")[1:]]   # the lines that begin in new text
    blank = sum(not line.strip() for line in generated)
    return blank / max(len(generated), 1), sum(len(new.split()) for _, new in samples) / len(samples)


def line_ends(texts):  # -> {"sentence"/"word": (share of speech lines ending so, share of those that end the speech)},
    # speech lines per speaker heading. A speech line is not blank, a heading ("KING HENRY.") or a stage direction.
    ends, headings = {"sentence": [], "word": [], "other": []}, 0
    for text in texts:
        lines = text.split("\n")[:-1]   # a text's last line may be cut off
        for line, after in zip(lines, lines[1:] + [None]):
            line = line.strip()
            headings += bool(HEADING.fullmatch(line))
            if after is None or not line or HEADING.fullmatch(line) or line.startswith("["):
                continue
            kind = "sentence" if line[-1] in ".?!" else "word" if line[-1].isalpha() else "other"
            ends[kind].append(not after.strip())
    speech = sum(map(len, ends.values()))
    return {kind: (len(ends[kind]) / speech, np.mean(ends[kind])) for kind in ("sentence", "word")}, speech / headings


def why_blank(model, ids):  # -> {what: (share in ids, {sampler: mean probability it gives that})}
    # Teacher-forced: at every token of the text, the sampler's distribution for the next one given the real
    # text before it (the perplexity's windows). A blank line is a line break right after a line break that
    # ended a line of text; it is judged only at those places.
    pieces = [model.tokenizer.decode([i]) for i in range(model.config.vocab_size)]
    kinds = {kind: [i for i, piece in enumerate(pieces) if re.fullmatch(pattern, piece)]
             for kind, pattern in TOKEN_KINDS.items()}
    newline = kinds["line break"][0]
    ids = np.asarray(ids)
    after_line = np.zeros(len(ids), bool)   # [N]: the token before is a line break that ended a line of text
    after_line[2:] = (ids[1:-1] == newline) & (ids[:-2] != newline)
    sums = {(what, name): 0.0 for what in [*kinds, "blank line"] for name in SAMPLERS}
    for begin, end, first in windows(len(ids), CONTEXT, STRIDE):
        logits = model(ids[begin:end - 1])[first - 1 - begin:]        # [n, V]: predicts ids[first:end]
        for name, sampler in SAMPLERS.items():
            probs = softmax(process_logits(logits, None, do_sample=True, **sampler))   # [n, V]
            for kind, members in kinds.items():
                sums[kind, name] += probs[:, members].sum(dtype=np.float64)
            sums["blank line", name] += probs[after_line[first:end], newline].sum(dtype=np.float64)
    scored, lines = ids[1:], after_line.sum()   # windows() scores every token but the first
    result = {kind: (np.isin(scored, members).mean(), {name: sums[kind, name] / len(scored) for name in SAMPLERS})
              for kind, members in kinds.items()}
    result["blank line"] = ((ids[after_line] == newline).mean(), {name: sums["blank line", name] / lines
                                                                  for name in SAMPLERS})
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    p.add_argument("--transformers", action="store_true", help="also score the held-out play with transformers")
    p.add_argument("--seeds", type=int, default=len(SEEDS), help=f"seeds per prompt (default {len(SEEDS)})")
    p.add_argument("--temperature", type=float, default=CLI_SAMPLER["temperature"], help="sampling temperature")
    p.add_argument("--top-k", type=int, default=CLI_SAMPLER["top_k"], help="top-k for sampling, 0 = all tokens")
    p.add_argument("--why-blank", action="store_true",
                   help="compare the held-out play's line, sentence and speech ends with the sampler's probabilities")
    args = p.parse_args()
    model = minineo.load(args.model)
    text = HELDOUT.read_text()
    ids = model.tokenizer.encode(text)
    score = score_tokens(model, ids, context=CONTEXT, stride=STRIDE)
    print(f"held-out {HELDOUT.name}: {len(text)} characters, {len(ids)} tokens")
    print(f"  minineo:      perplexity {score.perplexity:.2f}, {score.nll / score.tokens:.4f} nats/token, "
          f"{score.nll / len(text):.4f} nats/character ({score.tokens} tokens scored, context {CONTEXT}, stride {STRIDE})")
    if args.transformers:
        nll = transformers_nll(model.source, ids, CONTEXT, STRIDE)
        print(f"  transformers: perplexity {math.exp(nll / score.tokens):.2f}, {nll / len(text):.4f} nats/character")

    samples = sample_prompts(model, range(args.seeds), dict(temperature=args.temperature, top_k=args.top_k))
    blank_share, words = sampling_statistics(samples)
    print(f"sampling at T {args.temperature}, top-k {args.top_k}, {len(samples)} runs of {NEW_TOKENS} tokens: "
          f"{blank_share:.1%} blank lines, {words:.1f} words per {NEW_TOKENS} tokens")
    if args.why_blank:
        print(f"held-out play, teacher-forced: share in the play | mean probability at T 1 | at the CLI's "
              f"T {CLI_SAMPLER['temperature']}, top-k {CLI_SAMPLER['top_k']}")
        for what, (share, mean) in why_blank(model, ids).items():
            place = " where a line of text ended" if what == "blank line" else " (all tokens)"
            print(f"  {what + place:<45} {share:.4f} | {mean['T 1']:.4f} | {mean['CLI']:.4f}")
        for name, source in [("held-out play", [text]), ("the samples", [p + new for p, new in samples])]:
            ends, per_heading = line_ends(source)
            print(f"  {name}: " + "; ".join(f"{share:.0%} of speech lines end in a {kind}, {ended:.0%} of those the "
                  f"speech" for kind, (share, ended) in ends.items()) + f"; {per_heading:.2f} speech lines per heading")
    for prompt in PROMPTS:
        print(f"greedy {prompt!r}: {minineo.generate(model, prompt, max_new_tokens=40)!r}")


if __name__ == "__main__":
    main()
