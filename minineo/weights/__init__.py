"""Getting a model in: names and downloads (hub), config.json (config), safetensors files
(safetensors_io: the format; safetensors_checks: its checks), files from the internet opened safely
(files), the checkpoint's tensors as minineo's weights (checkpoint), the tokenizer, int8
copies (quantize), random checkpoints for tests and benchmarks, and `load`, which does it all."""
from .load import load

__all__ = ["load"]
