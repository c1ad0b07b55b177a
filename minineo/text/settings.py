"""How to generate: transformers' settings (GenerationConfig's names, meanings and defaults), checked
once per call, so that the sampling code after it trusts what it is given."""
import math
import numbers
import warnings
from dataclasses import dataclass

from ..errors import MinineoError, is_int

# generate()'s, the Python API's: transformers' GenerationConfig._get_default_generation_params()
# (configuration_utils.py), so that code moved from transformers behaves the same. Its default
# strategy is greedy (do_sample=False), as here; these values apply once do_sample=True. (The
# command line and the pipeline sample at their own temperatures: commands/generate.py, text/pipeline.py.)
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_K = 50
DEFAULT_TOP_P = 1.0
DEFAULT_REPETITION_PENALTY = 1.0
DEFAULT_MIN_NEW_TOKENS = 0  # transformers: None, which likewise adds no processor


def validate_sampling_settings(do_sample, temperature, top_k, top_p, repetition_penalty, min_new_tokens):
    # scalars -> None, or MinineoError naming the first bad setting. Called once per generate call
    # (by its Settings), not per token: process_logits trusts what it is given.
    if not isinstance(do_sample, bool):
        raise MinineoError(f"do_sample must be True or False, got {do_sample!r}")
    if not (isinstance(temperature, numbers.Real) and 0 <= temperature < math.inf):
        raise MinineoError(f"temperature must be a finite number > 0, got {temperature!r}")
    if do_sample and temperature == 0:   # as transformers: temperature 0 is not a distribution
        raise MinineoError("temperature must be > 0 when do_sample=True; for greedy decoding use do_sample=False")
    if not is_int(top_k, 0):
        raise MinineoError(f"top_k must be an integer >= 0 (0 = disabled), got {top_k!r}")
    if not (isinstance(top_p, numbers.Real) and 0 < top_p <= 1):
        raise MinineoError(f"top_p must be in (0, 1] (1 = disabled), got {top_p!r}")
    if not (isinstance(repetition_penalty, numbers.Real) and 0 < repetition_penalty < math.inf):
        raise MinineoError(f"repetition_penalty must be a finite number > 0 (1 = disabled), got {repetition_penalty!r}")
    if not is_int(min_new_tokens, 0):
        raise MinineoError(f"min_new_tokens must be an integer >= 0, got {min_new_tokens!r}")
    ignored = [f"{name}={value!r}" for name, value, default in [("temperature", temperature, DEFAULT_TEMPERATURE),
               ("top_k", top_k, DEFAULT_TOP_K), ("top_p", top_p, DEFAULT_TOP_P)] if value != default]
    if ignored and not do_sample:   # as transformers: greedy ignores them, and says so
        warnings.warn(f"do_sample is False (greedy), so {', '.join(ignored)} has no effect; "
                      "pass do_sample=True to sample", UserWarning, stacklevel=5)


# transformers' default is max_length=20 *including* the prompt, which a longer prompt uses up
# before anything is generated; a count of new tokens is what a user means. generate()'s default;
# the command line and the pipeline have their own (commands/generate.py, text/pipeline.py).
DEFAULT_MAX_NEW_TOKENS = 50


@dataclass(frozen=True)
class Settings:
    """How to generate, with transformers' names, meanings and defaults (GenerationConfig)."""
    max_new_tokens: int | None = None  # None: max_length minus the prompt if set, else DEFAULT_MAX_NEW_TOKENS
    max_length: int | None = None      # prompt + new tokens, as transformers counts (padded prompt)
    min_new_tokens: int = DEFAULT_MIN_NEW_TOKENS   # EOS is suppressed until this many new tokens exist
    min_length: int | None = None      # the same, counted with the prompt, as transformers counts
    do_sample: bool = False            # False: greedy, and temperature/top_k/top_p are ignored
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    seed: int | None = None            # the same seed gives the same samples; None: fresh randomness
    truncate: bool = False             # a prompt too long for the context keeps its last tokens
    hooks: tuple = ()                  # not transformers': [(name, fn)] run at every step (minineo/model/hooks.py)

    def __post_init__(self):
        for name, low in [("max_new_tokens", 0), ("max_length", 1), ("min_length", 0)]:
            value = getattr(self, name)
            if value is not None and not is_int(value, low):
                raise MinineoError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.seed is not None and not is_int(self.seed, 0):
            raise MinineoError(f"seed must be an integer >= 0, got {self.seed!r}")
        validate_sampling_settings(self.do_sample, self.temperature, self.top_k, self.top_p,
                                            self.repetition_penalty, self.min_new_tokens)

    def sampling_kwargs(self):  # what next_token needs
        return dict(do_sample=self.do_sample, temperature=self.temperature, top_k=self.top_k,
                    top_p=self.top_p, repetition_penalty=self.repetition_penalty)
