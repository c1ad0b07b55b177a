"""minineo: GPT-Neo in plain NumPy.

    model/     the transformer itself: embedding, layer norm, attention, MLP, block, forward pass, KV cache
    fast/      the same products, faster: threaded tiles, int8 weights, thread control
    weights/   getting a model in: Hub names and downloads, config.json, safetensors, tokenizer, int8 copies
    text/      using it: sampling, generation, streaming, the transformers-style pipeline, perplexity
    train/     training in NumPy: the backward of every layer, AdamW, the loop (python -m minineo.train)
    commands/  the command lines (python -m minineo, .perplexity, .quantize, .bench, .eval)
"""
from .errors import MinineoError
from .fast.threads import set_threads
from .model import GPTNeo, gpt_neo
from .text.generation import generate, generate_ids, stream_text
from .text.sliding_window import score_tokens, text_perplexity
from .text.pipeline import pipeline
from .weights import load
from .model.config import PRESETS, Config

__all__ = ["Config", "GPTNeo", "MinineoError", "PRESETS", "generate", "generate_ids", "gpt_neo", "load",
           "pipeline", "score_tokens", "set_threads", "stream_text", "text_perplexity"]
