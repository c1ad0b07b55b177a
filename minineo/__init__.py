"""minineo: GPT-Neo in plain NumPy."""
from .config import PRESETS, Config
from .errors import MinineoError
from .generate import generate
from .model import GPTNeo, gpt_neo, load
from .perplexity import perplexity
from .pipeline import pipeline

__all__ = ["Config", "GPTNeo", "MinineoError", "PRESETS", "generate", "gpt_neo", "load", "perplexity", "pipeline"]
