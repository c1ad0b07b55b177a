"""Attention patterns as pictures. matplotlib is imported here only, so the rest of minineo runs without it."""
import numpy as np


def plot_attention(pattern, tokens=None, heads=None, title="", columns=4, titles=None):
    """pattern [H, T, S] (cache["pattern", layer] of one sequence) -> a matplotlib Figure, one panel a head:
    row = the query's token, column = the key's; tokens labels both when S == T (no KV cache before).
    titles: one per panel (default "head h")."""
    import matplotlib.pyplot as plt

    pattern = np.asarray(pattern)
    heads = range(pattern.shape[0]) if heads is None else list(heads)
    rows = -(-len(heads) // columns)
    fig, axes = plt.subplots(rows, min(columns, len(heads)), figsize=(3.2 * min(columns, len(heads)), 3.2 * rows),
                             squeeze=False)
    for ax in axes.flat[len(heads):]:
        ax.set_visible(False)
    titles = [f"head {head}" for head in heads] if titles is None else titles
    for ax, head, name in zip(axes.flat, heads, titles):
        ax.imshow(pattern[head], cmap="Blues", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        if tokens is not None and pattern.shape[-1] == pattern.shape[-2] == len(tokens):
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
        else:
            ax.set_xlabel("key", fontsize=8)
            ax.set_ylabel("query", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
