"""`pipeline("text-generation")`: transformers' pipeline interface, on top of `generate`.

    generator = minineo.pipeline("text-generation", model="125M")
    generator("EleutherAI has", do_sample=True, min_length=50)
    # -> [{'generated_text': 'EleutherAI has ...'}]   (the prompt included, as in transformers)
"""
from ..errors import MinineoError
from .generation import generate
from ..model import GPTNeo
from ..weights import load

TASKS = ("text-generation",)

# transformers 5.24 TextGenerationPipeline._default_generation_config: a pipeline samples by
# default, unlike generate() (greedy), and so does this one, with the same values.
PIPELINE_MAX_NEW_TOKENS = 256
PIPELINE_TEMPERATURE = 0.7
# Each applies unless the pipeline or the call sets it; as there, a max_length that is set replaces
# the default max_new_tokens, and greedy decoding (do_sample=False) takes no temperature.
PIPELINE_DEFAULTS = {"max_new_tokens": PIPELINE_MAX_NEW_TOKENS, "do_sample": True, "temperature": PIPELINE_TEMPERATURE}


def pipeline(task, model=None, int8=False, **settings):
    """task: "text-generation". model: a GPTNeo, or a name for minineo.load (None = the bundled
    model). settings: generation settings (see minineo.generate.Settings) for every call."""
    if task not in TASKS:
        raise MinineoError(f"unknown task {task!r}: minineo's pipeline does only {', '.join(map(repr, TASKS))}")
    if not isinstance(model, GPTNeo):
        model = load(model, int8=int8)
    return TextGenerationPipeline(model, settings)


class TextGenerationPipeline:
    def __init__(self, model, settings):
        self.model, self.settings = model, settings

    def __call__(self, text_inputs, return_full_text=True, num_return_sequences=1, **settings):
        """A prompt -> [{'generated_text': ...}] with num_return_sequences entries;
        a list of prompts -> a list of such lists. return_full_text=False leaves out the prompt."""
        if not (isinstance(num_return_sequences, int) and num_return_sequences >= 1):
            raise MinineoError(f"num_return_sequences must be an integer >= 1, got {num_return_sequences!r}")
        settings = {**self.settings, **settings}
        defaults = {key: value for key, value in PIPELINE_DEFAULTS.items() if key not in settings
                    and not (key == "max_new_tokens" and "max_length" in settings)
                    and not (key == "temperature" and not settings.get("do_sample", True))}
        settings.update(defaults)
        if isinstance(text_inputs, str):
            return self._complete(text_inputs, return_full_text, num_return_sequences, settings, defaults)
        return [self._complete(p, return_full_text, num_return_sequences, settings, defaults) for p in text_inputs]

    def _complete(self, prompt, return_full_text, n, settings, defaults):  # -> [{'generated_text': str}] * n
        # One prompt at a time, as transformers' pipeline runs by default (batch_size=1): min_length and
        # max_length then count this prompt's own tokens. Its n sequences are one batch of equal rows.
        if "max_new_tokens" in defaults:
            # A default the user never set must not be why a call fails: PIPELINE_MAX_NEW_TOKENS fill the
            # bundled model's whole context, so the default shrinks to the room this prompt leaves.
            room = self.model.config.max_position_embeddings - max(1, len(self.model.tokenizer.encode(prompt)))
            settings = {**settings, "max_new_tokens": max(0, min(defaults["max_new_tokens"], room))}
        texts = generate(self.model, [prompt] * n, **settings)
        return [{"generated_text": prompt + text if return_full_text else text} for text in texts]
