"""The exercises, one file per lesson as the exercise notebooks are (base.py: what an exercise is).

    lesson1_embeddings.py     embed, lm_head
    lesson2_layer_norm.py     layer_norm
    lesson3_attention.py      softmax, causal_mask, attention, split_heads, merge_heads, self_attention
    lesson4_mlp_and_block.py  gelu_new, feed_forward, block
    lesson5_generating.py     GlobalCache, LocalCache, apply_temperature, top_k_filter, top_p_filter
"""
from . import lesson1_embeddings as l1, lesson2_layer_norm as l2, lesson3_attention as l3, \
    lesson4_mlp_and_block as l4, lesson5_generating as l5
from .lesson5_generating import CacheProblem

EXERCISES = {e.name: e for e in [l1.EMBED, l1.LM_HEAD, l2.LAYER_NORM, l3.SOFTMAX, l3.CAUSAL_MASK, l3.ATTENTION,
                                 l3.SPLIT_HEADS, l3.MERGE_HEADS, l3.SELF_ATTENTION, l4.GELU_NEW, l4.FEED_FORWARD,
                                 l4.BLOCK, l5.GLOBAL_CACHE, l5.LOCAL_CACHE, l5.APPLY_TEMPERATURE, l5.TOP_K_FILTER,
                                 l5.TOP_P_FILTER]}
LESSONS = {1: "Tokens in, logits out: embeddings and the tied LM head", 2: "Layer norm",
           3: "Attention, global and local", 4: "The MLP and the transformer block",
           5: "Generating: the KV cache and sampling"}

__all__ = ["CacheProblem", "EXERCISES", "LESSONS"]
