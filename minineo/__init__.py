"""minineo: GPT-Neo in plain NumPy."""
from .config import PRESETS, Config
from .errors import MinineoError
from .model import GPTNeo, gpt_neo, load

__all__ = ["Config", "GPTNeo", "MinineoError", "PRESETS", "gpt_neo", "load"]
