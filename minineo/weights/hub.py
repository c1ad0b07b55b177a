"""Finding a model: the bundled one, a local directory, or a Hugging Face Hub id (downloaded once, cached)."""
import re
from pathlib import Path

from ..errors import MinineoError

DATA = Path(__file__).parent.parent / "data"
BUNDLED = DATA / "neo-shakespeare"
# The models that ship with minineo, by name: the default one, and notebook 3's, which copies (see their MODEL_CARD.md).
BUNDLED_BY_NAME = {"neo-shakespeare": BUNDLED, "neo-copying": DATA / "neo-copying"}
RELEASES = {"125M": "EleutherAI/gpt-neo-125m", "1.3B": "EleutherAI/gpt-neo-1.3B", "2.7B": "EleutherAI/gpt-neo-2.7B"}
# Only what minineo reads: never the TensorFlow, Flax or Rust copies of the weights, and the PyTorch
# copies only when a repository has no safetensors (many fine-tunes and the TinyStories models).
NEEDED_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json",
                "tokenizer.json", "vocab.json", "merges.txt"]
TORCH_FILES = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve(name=None):
    """A directory holding config.json and the weights, for a name as a user would type it."""
    if name is None:
        return BUNDLED
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if str(name) in BUNDLED_BY_NAME:
        return BUNDLED_BY_NAME[str(name)]
    name = RELEASES.get(str(name).upper(), str(name))
    if path.exists():
        raise MinineoError(f"{path}: is a file; pass the model directory that holds config.json")
    if not HUB_ID.match(name):
        raise MinineoError(f"{path}: no such model directory")
    return download(name)


def download(repo_id):
    try:
        from huggingface_hub import list_repo_files, snapshot_download
    except ImportError:
        raise MinineoError(f"{repo_id}: not a local directory, and huggingface_hub is not installed "
                           "to download it (pip install huggingface_hub)") from None
    try:   # ask the Hub which files exist, so that only one copy of the weights is downloaded
        files = list_repo_files(repo_id)
    except Exception:   # offline: the local cache may still hold the model, and snapshot_download finds it
        files = []
    patterns = NEEDED_FILES
    if files and not any(name.endswith(".safetensors") for name in files):
        patterns = NEEDED_FILES + TORCH_FILES
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:   # offline, unknown repo, no permission: all one message for the user
        raise MinineoError(
            f"{repo_id}: not a local directory, and downloading it from the Hugging Face Hub failed "
            f"({type(e).__name__}). On a machine with internet run `hf download {repo_id} --include "
            f"{' '.join(repr(p) for p in NEEDED_FILES)}` (a repository without safetensors: "
            f"{' '.join(repr(p) for p in TORCH_FILES)}) and pass the directory it prints with --model") from None
