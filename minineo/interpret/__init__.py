"""Looking inside a model, with TransformerLens's vocabulary: what an interpretability lesson uses.

    methods.py  the logit lens, direct logit attribution, head ablation, activation patching
    plots.py    attention patterns as pictures (matplotlib, imported only there)

They build on the model's own hook points (minineo/model/hooks.py): `model.run_with_cache(ids)` and
`model.run_with_hooks(ids, fwd_hooks=[(name, fn)])`.
"""
from .methods import (ablate_heads, direct_logit_attribution, lens_loss, lens_top_tokens, logit_lens,
                      patch_grid)

__all__ = ["ablate_heads", "direct_logit_attribution", "lens_loss", "lens_top_tokens", "logit_lens", "patch_grid"]
