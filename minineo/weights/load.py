"""minineo.load: from a name as a user types it to a GPTNeo ready to run."""
from ..errors import MinineoError
from ..fast import tiled
from ..fast.banded import banded_attention
from ..fast.elementwise import gelu_new_rows
from ..fast.memory import keep_freed_memory
from ..model import GPTNeo
from .checkpoint import load_params
from .config import load_config
from .hub import resolve
from .tokenizer import Tokenizer


def load(name=None, int8=False, fast=True):
    """A model directory, a Hub id (EleutherAI/gpt-neo-2.7B), 125M / 1.3B / 2.7B, a bundled model by name
    (neo-shakespeare, neo-copying), or None for the default bundled model (neo-shakespeare).

    int8=True quantizes every matrix to int8 at load. fast=False keeps float32 matrices as plain NumPy
    arrays, so that `x @ w.T` is NumPy's own product, and attention scores the whole masked matrix:
    the textbook path, slower on several cores and on long prompts (GELU too: fast=True computes a
    prompt's in blocks of rows, minineo.fast.elementwise).
    fast=True also keeps freed memory in the process for the next step's arrays (minineo.fast.memory)."""
    directory = resolve(name)
    config = load_config(directory / "config.json")
    params = load_params(directory, config, int8=int8)
    tokenizer = Tokenizer.from_dir(directory)
    if tokenizer.directory == directory and tokenizer.vocab_size > config.vocab_size:   # ids past the embedding
        raise MinineoError(f"{tokenizer.files} has {tokenizer.vocab_size} tokens, but {directory / 'config.json'} "
                           f"has vocab_size {config.vocab_size} (the rows of the model's embedding): the tokenizer "
                           "belongs to another model")
    if not fast:
        return GPTNeo(config, params, tokenizer, source=str(directory))
    keep_freed_memory()
    return GPTNeo(config, tiled(params), tokenizer, source=str(directory), attend=banded_attention,
                  gelu=gelu_new_rows)
