"""Finding a model: the bundled one, a local directory, or a Hugging Face Hub id (downloaded once, cached).

A name is read in this order, so that a typo in a path is never sent to the Hub:
  1. an existing directory (or file: refused, a model is a directory);
  2. anything that names a local path: it starts with `.`, `/`, `~` or `\\`, it is a Windows path
     (`C:\\models`, `C:/models`), or its first part is an existing directory (`models/my-neo` with
     `models/` present): "no such model directory", at once;
  3. `125M` / `1.3B` / `2.7B` (EleutherAI's releases), or the name of a model in minineo/data;
  4. a Hub id, `owner/name`: downloaded, or found in huggingface_hub's cache when the Hub cannot be
     reached. It could also have been a mistyped directory, so its error says both.
"""
import json
import re
import shlex
import urllib.error
import urllib.request
from pathlib import Path, PureWindowsPath

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
TORCH_FILES = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# One request asks the Hub which files a repository has, with this bound: offline it fails at once (no
# DNS) or after these seconds (a network that drops packets), instead of huggingface_hub's five
# retries with back-off (23 s and eleven log lines, measured).
HUB_TIMEOUT_S = 3


def names_a_path(name):
    """Does this value name a local path rather than a Hub id? (See the module's docstring.)"""
    if name.startswith((".", "/", "~", "\\")) or PureWindowsPath(name).drive or "\\" in name:
        return True
    return Path(Path(name).parts[0]).is_dir() if Path(name).parts else False


def resolve(name=None):
    """A directory holding config.json and the weights, for a name as a user would type it."""
    if name is None:
        return BUNDLED
    name = str(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise MinineoError(f"{path}: is a file; pass the model directory that holds config.json")
    if names_a_path(name):
        raise MinineoError(f"{name}: no such model directory")
    if name.upper() in RELEASES:
        repo_id = RELEASES[name.upper()]
        return download(repo_id, f"{name} ({repo_id}):")
    if name in BUNDLED_BY_NAME:
        return BUNDLED_BY_NAME[name]
    if HUB_ID.match(name):
        return download(name, f"{name}: no such local directory, and")
    raise MinineoError(f"{name}: no such model directory, and not a Hub id (owner/name), one of "
                       f"{' / '.join(RELEASES)}, or a bundled model ({', '.join(BUNDLED_BY_NAME)})")


def include(patterns):  # hf download's flags for these patterns: one --include each (hf reads more words as files)
    # double quotes keep a glob from the shell in bash, zsh, cmd and PowerShell alike
    return " ".join(f'--include "{p}"' if "*" in p else f"--include {shlex.quote(p)}" for p in patterns)


def download_command(repo_id):  # -> the `hf download` line that fetches what minineo reads, and its folder
    folder = repo_id.split("/")[-1]
    return f"hf download {repo_id} {include(NEEDED_FILES)} --local-dir {folder}", folder


def hub_files(repo_id):  # -> the names of the files in Hub repository repo_id: one request, at most HUB_TIMEOUT_S
    # urllib, not huggingface_hub: huggingface_hub retries five times, and first asks the Hub for its
    # registry of AI agents (3 s more on a network that drops packets). The proxy variables apply.
    from huggingface_hub import constants, get_token
    token = get_token()
    request = urllib.request.Request(f"{constants.ENDPOINT}/api/models/{repo_id}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=HUB_TIMEOUT_S) as response:
        return [sibling["rfilename"] for sibling in json.load(response).get("siblings") or []]


def download(repo_id, what):
    """The local snapshot of Hub repository repo_id, downloaded if needed. `what` starts every error
    (the name as the user typed it)."""
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        raise MinineoError(f"{what} huggingface_hub is not installed to download it "
                           "(pip install huggingface_hub)") from None
    if constants.HF_HUB_OFFLINE:
        return cached(repo_id, what, "the Hugging Face Hub is not asked (HF_HUB_OFFLINE is set)")
    try:   # ask the Hub which files exist, so that only one copy of the weights is downloaded
        files = hub_files(repo_id)
    except urllib.error.HTTPError as e:
        if e.code in (401, 404):   # the Hub answers 401 for a repository it does not show to this user
            raise MinineoError(f"{what} the Hugging Face Hub has no model {repo_id} "
                               "(a private one needs `hf auth login`)") from None
        return cached(repo_id, what, f"the Hugging Face Hub answered HTTP {e.code}")
    except Exception as e:   # no network, no DNS, a timeout, a proxy that refuses: all "cannot be reached"
        return cached(repo_id, what, f"the Hugging Face Hub cannot be reached ({first_line(e)})")
    patterns = NEEDED_FILES if any(name.endswith(".safetensors") for name in files) else NEEDED_FILES + TORCH_FILES
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:   # the connection dropped, the disk is full, a gated model, ...
        raise MinineoError(f"{what} downloading {repo_id} from the Hugging Face Hub failed ({first_line(e)})") from None


def cached(repo_id, what, hub_said):
    """The copy of repo_id in huggingface_hub's cache, for when the Hub did not answer; else one line
    that says why and the command that fetches the model on a machine with internet."""
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id, allow_patterns=NEEDED_FILES + TORCH_FILES, local_files_only=True))
    except Exception:   # not in the cache
        pass
    command, folder = download_command(repo_id)
    raise MinineoError(f"{what} {hub_said}, and it is not in the local cache. "
                       f"On a machine with internet run `{command}` and pass that directory: -m {folder} "
                       f"(a repository without safetensors also needs {include(TORCH_FILES)})")


def first_line(error):  # an exception from huggingface_hub or the network, shortened to one line
    text = str(getattr(error, "reason", error)).strip()   # urllib's URLError wraps the socket's error
    return text.splitlines()[0][:160] if text else type(error).__name__
