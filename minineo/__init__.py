"""minineo: GPT-Neo in plain NumPy.

    errors.py   MinineoError, the one exception type of a user mistake
    model/      the transformer itself: config, embedding, layer norm, attention, MLP, block, forward pass,
                KV cache, named activations (hooks), the checks of its inputs
    fast/       the same products, faster: threaded tiles, int8 weights, banded attention, thread control
    weights/    getting a model in: Hub names and downloads, config.json, safetensors, tokenizer, int8 copies
    text/       using it: settings, sampling, generation, streaming, the transformers-style pipeline, perplexity
    train/      training in NumPy: the backward of every layer, AdamW, the loop (python -m minineo.train)
    interpret/  looking inside: logit lens, direct logit attribution, ablation, activation patching
    course/     the course kit: exercises per lesson, their checker, the notebooks as pages
    commands/   every command line (python -m minineo, .perplexity, .eval, .quantize, .bench, .calibrate,
                .train, .train.bench, .course, .check); the python -m spellings are shims beside this file
Imports only point down this list (tests/test_imports.py).
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
