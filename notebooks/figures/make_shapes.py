"""Draw notebooks/figures/shapes.png: GPT-Neo's forward pass with the shape of every array, and how
attention splits the hidden size into heads and merges them back.

    python notebooks/figures/make_shapes.py

The figure uses symbols only (B, T, S, d, H, hd, V, L), never one model's numbers, so it holds for
every GPT-Neo: the bundled model, 125M, 1.3B and 2.7B. Notebook 5 prints the same shapes for the
model it loads. Each step names the minineo function that computes it (minineo/model/*.py).
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

OUT = Path(__file__).resolve().parent / "shapes.png"

STREAM = "#dbe9f6"     # the residual stream and what reads it
ATTN = "#fde2c8"       # attention's arrays
MLP = "#dff2d8"        # the MLP's
HEAD_COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
MONO = dict(family="monospace")
H_BOX = 0.66           # box height


def box(ax, x, y, text, shape, color=STREAM, w=3.4):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - H_BOX / 2), w, H_BOX, boxstyle="round,pad=0.02,rounding_size=0.12",
                                fc=color, ec="#333333", lw=1.2))
    ax.text(x, y + 0.13, text, ha="center", va="center", fontsize=11)
    ax.text(x, y - 0.16, shape, ha="center", va="center", fontsize=11.5, weight="bold", **MONO)


def arrow(ax, start, end, label=None, dx=0.15, ha="left", color="#333333"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=15, lw=1.3, color=color,
                                 shrinkA=0, shrinkB=0))
    if label:
        ax.text((start[0] + end[0]) / 2 + dx, (start[1] + end[1]) / 2, label, ha=ha, va="center",
                fontsize=10, color="#444444", **MONO)


def down(ax, x, y_from, y_to, label=None):  # from the bottom of one box to the top of the next
    arrow(ax, (x, y_from - H_BOX / 2), (x, y_to + H_BOX / 2), label)


def plus(ax, x, y, label):
    ax.text(x, y, "+", fontsize=22, ha="center", va="center", weight="bold")
    ax.text(x - 0.35, y + 0.08, label, fontsize=10, ha="right", va="bottom", color="#333333", **MONO)


def forward_pass(ax):
    ax.set(xlim=(0, 12), ylim=(-1.2, 18.2))
    ax.axis("off")
    ax.set_title("GPT-Neo's forward pass: every array and its shape", fontsize=15, loc="left")
    cx, ac = 2.9, 8.6                      # the residual stream's column, attention's column
    y = dict(ids=17.4, x=16.0, ln1=13.4, qkv=13.4, heads=12.0, scores=10.6, probs=9.2, mixed=7.8,
             attn_out=6.4, ln2=5.2, fc=3.9, proj=2.6, x2=1.6, lnf=-0.1)
    plus1 = y["attn_out"]

    box(ax, cx, y["ids"], "token ids", "[B, T]")
    down(ax, cx, y["ids"], y["x"], "embed: wte[ids] + wpe[positions]")
    box(ax, cx, y["x"], "residual stream x", "[B, T, d]")

    # one block: a frame around both sublayers
    ax.add_patch(Rectangle((0.3, 1.2), 11.5, 13.85, fill=False, ec="#777777", lw=1.3, ls=(0, (6, 3))))
    ax.text(11.6, 14.85, "one block (block.py), repeated L times:\nglobal and local layers differ only in the mask",
            fontsize=10.5, ha="right", va="top", color="#555555")
    down(ax, cx, y["x"], y["ln1"], "ln_1: layer_norm")
    box(ax, cx, y["ln1"], "normalised copy of x", "[B, T, d]")

    # attention
    arrow(ax, (cx + 1.7, y["qkv"]), (ac - 1.9, y["qkv"]))
    box(ax, ac, y["qkv"], "q_proj, k_proj, v_proj (d -> d)", "q, k, v: [B, T, d] each", ATTN, w=3.8)
    down(ax, ac, y["qkv"], y["heads"], "split_heads (d = H x hd)")
    box(ax, ac, y["heads"], "q  |  k, v with the KV cache", "[B, H, T, hd] | [B, H, S, hd]", ATTN, w=4.6)
    down(ax, ac, y["heads"], y["scores"], "q @ k^T, no 1/sqrt(hd)")
    box(ax, ac, y["scores"], "scores, masked", "[B, H, T, S]", ATTN)
    ax.text(ac - 1.9, y["scores"], "mask [T, S]:\nglobal: every key j <= i\nlocal: the last `window`\n"
            "keys, i - window < j <= i", fontsize=9.5, ha="right", va="center", color="#8a4b08")
    down(ax, ac, y["scores"], y["probs"], "softmax over the S keys")
    box(ax, ac, y["probs"], "attention weights", "[B, H, T, S]", ATTN)
    down(ax, ac, y["probs"], y["mixed"], "weights @ v")
    box(ax, ac, y["mixed"], "each head's mix of values", "[B, H, T, hd]", ATTN)
    down(ax, ac, y["mixed"], y["attn_out"], "merge_heads, out_proj (d -> d)")
    box(ax, ac, y["attn_out"], "attention output", "[B, T, d]", ATTN)
    arrow(ax, (ac - 1.7, plus1), (cx + 0.3, plus1))
    plus(ax, cx, plus1, "x = x + attention")

    # the stream itself bypasses each sublayer: the residual connections
    rx = 0.75
    for top, bottom in [(y["x"], plus1), (plus1, y["x2"])]:
        ax.plot([cx - 1.7 if top == y["x"] else cx - 0.3, rx, rx, cx - 0.3], [top, top, bottom, bottom],
                color="#888888", lw=1.3, ls="--")
    ax.text(rx - 0.1, (y["x"] + plus1) / 2, "residual: x passes by unchanged", rotation=90, ha="right",
            va="center", fontsize=9.5, color="#666666")

    # MLP
    arrow(ax, (cx, plus1 - 0.3), (cx, y["ln2"] + H_BOX / 2), "ln_2: layer_norm", dx=0.15)
    box(ax, cx, y["ln2"], "normalised copy of x", "[B, T, d]", MLP)
    down(ax, cx, y["ln2"], y["fc"], "c_fc (d -> 4d), gelu_new")
    box(ax, cx, y["fc"], "MLP hidden", "[B, T, 4d]", MLP)
    down(ax, cx, y["fc"], y["proj"], "c_proj (4d -> d)")
    box(ax, cx, y["proj"], "MLP output", "[B, T, d]", MLP)
    arrow(ax, (cx, y["proj"] - H_BOX / 2), (cx, y["x2"] + 0.3))
    plus(ax, cx, y["x2"], "x = x + MLP")

    # after the last block
    arrow(ax, (cx, y["x2"] - 0.3), (cx, y["lnf"] + H_BOX / 2), "ln_f: layer_norm", dx=0.15)
    box(ax, cx, y["lnf"], "final hidden state", "[B, T, d]")
    arrow(ax, (cx + 1.7, y["lnf"]), (ac - 1.7, y["lnf"]))
    ax.text((cx + ac) / 2, y["lnf"] + 0.12, "lm_head: @ wte^T", ha="center", va="bottom", fontsize=10, **MONO)
    box(ax, ac, y["lnf"], "logits: a score per token", "[B, T, V]")
    ax.text(0.3, -0.95, "B batch   T new tokens   S keys visible (cached + new)   d hidden size   H heads   "
            "hd = d / H   V vocabulary   L layers", fontsize=10.5, color="#222222", **MONO)


def grid(ax, x0, y0, rows, cols, colors, cell):  # a small matrix of coloured cells, top-left at (x0, y0)
    for r in range(rows):
        for c in range(cols):
            ax.add_patch(Rectangle((x0 + c * cell, y0 - (r + 1) * cell), cell, cell, fc=colors(c), ec="white", lw=1))


def heads_panel(ax):
    ax.set(xlim=(0, 10), ylim=(0, 10))
    ax.axis("off")
    ax.set_title("split_heads and merge_heads (attention.py), one sequence", fontsize=15, loc="left")
    H, hd, T, cell = 4, 2, 6, 0.36
    top = 8.8
    grid(ax, 0.4, top, T, H * hd, lambda c: HEAD_COLORS[c // hd], cell)
    width = H * hd * cell
    ax.text(0.4 + width / 2, top + 0.2, "q: [T, d]", ha="center", va="bottom", fontsize=12, **MONO)
    ax.text(0.4 + width / 2, top - T * cell - 0.2, "d = H x hd columns:\nhead h owns columns\nh*hd .. (h+1)*hd - 1",
            ha="center", va="top", fontsize=10)
    ax.text(0.25, top - T * cell / 2, "T", ha="right", va="center", fontsize=12, **MONO)
    x1 = 5.2
    for h in range(H):
        x = x1 + h * (hd * cell + 0.3)
        grid(ax, x, top, T, hd, lambda c, h=h: HEAD_COLORS[h], cell)
        ax.text(x + hd * cell / 2, top - T * cell - 0.15, f"head {h}", ha="center", va="top", fontsize=10,
                color=HEAD_COLORS[h])
    ax.text(x1 + (H * (hd * cell + 0.3) - 0.3) / 2, top + 0.2, "[H, T, hd]", ha="center", va="bottom",
            fontsize=12, **MONO)
    mid = top - T * cell / 2
    arrow(ax, (0.6 + width, mid + 0.3), (x1 - 0.2, mid + 0.3))
    ax.text((0.6 + width + x1) / 2, mid + 0.42, "split_heads", ha="center", va="bottom", fontsize=11, **MONO)
    arrow(ax, (x1 - 0.2, mid - 0.3), (0.6 + width, mid - 0.3))
    ax.text((0.6 + width + x1) / 2, mid - 0.42, "merge_heads", ha="center", va="top", fontsize=11, **MONO)
    ax.text(0.2, 4.3,
            "split_heads: x.reshape(B, T, H, hd).transpose(0, 2, 1, 3)\n"
            "             [B, T, d] -> [B, H, T, hd]\n"
            "merge_heads: x.transpose(0, 2, 1, 3).reshape(B, T, H * hd)\n"
            "             [B, H, T, hd] -> [B, T, d]\n\n"
            "No number changes: a head is a slice of hd columns of q, k and v.\n"
            "Each head scores its T queries against its S keys\n"
            "([B, H, T, hd] @ [B, H, hd, S] -> [B, H, T, S]), so the H heads\n"
            "can look at different tokens. merge_heads puts every head's\n"
            "output back in its own columns; out_proj (d -> d) mixes them.",
            fontsize=10.5, va="top", **MONO)


def main():
    fig = plt.figure(figsize=(19, 11))
    forward_pass(fig.add_axes([0.005, 0.01, 0.6, 0.95]))
    heads_panel(fig.add_axes([0.61, 0.25, 0.385, 0.71]))
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
