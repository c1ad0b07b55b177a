"""`minineo.perplexity(model, text)` (the function: minineo/text/perplexity.py), and
`python -m minineo.perplexity FILE` (the command: minineo/commands/perplexity.py, run by __main__.py).

Both go by the one name users know, so this module is that name, and calling it calls the function.
"""
import sys
import types

from ..text.perplexity import perplexity as _perplexity


class _CallableModule(types.ModuleType):
    def __call__(self, model, text, context=None, stride=None):  # minineo.perplexity(model, text)
        return _perplexity(model, text, context, stride)


sys.modules[__name__].__class__ = _CallableModule
