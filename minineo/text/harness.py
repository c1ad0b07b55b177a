"""minineo as a model backend of EleutherAI's lm-evaluation-harness: every lm-eval task runs on it.

    import lm_eval, minineo.text.harness        # the import registers the backend as "minineo"
    lm_eval.simple_evaluate(model="minineo", model_args="pretrained=EleutherAI/gpt-neo-125M,int8=true",
                            tasks=["hellaswag"])

or `python -m minineo.eval --tasks hellaswag --model 125M` (minineo/commands/evaluate.py). The model
arguments: pretrained (a directory, Hub id or preset; default the bundled model), int8, threads,
batch_size, max_length (default: the model's max_position_embeddings), ray (an address: the requests
go to Ray actors, minineo/text/distributed.py).

The three kinds of request are answered as lm-eval's `hf` backend (HFLM) answers them, request for
request (tests/test_eval_harness.py checks every one against HFLM on the same checkpoint):

  loglikelihood          lm-eval's TemplateLM tokenizes (context, continuation): the whole text is
                         encoded and the context's tokens split off the front, trailing spaces of the
                         context go to the continuation, an empty context becomes the prefix token
                         <|endoftext|>. minineo/text/scoring.py scores the token pairs.
  loglikelihood_rolling  a whole document: lm-eval's rolling windows (utils.get_rolling_token_windows
                         with the prefix token in front, one token of context, made disjoint), each
                         window a token pair; the document's answer is the sum.
  generate_until         greedy decoding (do_sample false, as every task of the model card asks) of at
                         most max_gen_toks tokens (default 256) after the context's last
                         max_length - max_gen_toks tokens, stopped at <|endoftext|> or a stop string,
                         and cut before the first stop string.

A log-likelihood that is NaN or infinite stops the evaluation with an error naming the request.
"""
import math

from lm_eval import utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from ..errors import MinineoError, is_int
from ..fast.threads import set_threads
from ..model import GPTNeo
from ..weights import load
from .scoring import generate_greedy, score, score_batch

MAX_GEN_TOKS = 256   # HFLM's default when a task gives no max_gen_toks


def _flag(name, value):  # "true" / True -> True, as lm-eval's argument strings give them
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise MinineoError(f"model argument {name}: expected true or false, got {value!r}")


def _count(name, value, default):  # None / "auto" -> default; else an integer >= 1 (or its digits)
    if value is None or value == "auto":
        return default
    if not (is_int(value) or (isinstance(value, str) and value.isdigit())) or int(value) < 1:
        raise MinineoError(f"model argument {name}: expected an integer >= 1, got {value!r}")
    return int(value)


def _quote(text, n=60):  # a request's text, short, for an error message
    return repr(text if len(text) <= n else text[:n] + "...")


def _name(context, continuation):  # a request in an error message; a rolling window names its document
    if context is None:
        return f"document {_quote(continuation)}"
    return f"request {_quote(context)} + {_quote(continuation)}"


@register_model("minineo")
class MinineoLM(TemplateLM):
    def __init__(self, pretrained=None, int8=False, threads=None, batch_size=8, max_length=None, ray=None,
                 device=None, max_batch_size=None, **unknown):
        # device and max_batch_size: what lm-eval passes every backend; minineo runs on the CPU and
        # batches by batch_size alone, so both are accepted and have no effect (lm-eval's CLI says cuda:0).
        super().__init__()
        if unknown:
            raise MinineoError(f"unknown model argument{'s' * (len(unknown) > 1)} {', '.join(sorted(unknown))}; "
                               "minineo takes pretrained, int8, threads, batch_size, max_length, ray")
        self.int8 = _flag("int8", int8)
        self.threads = _count("threads", threads, None)
        self.batch = _count("batch_size", batch_size, 8)
        set_threads(self.threads)
        if isinstance(pretrained, GPTNeo):
            self.model = pretrained
        else:   # with Ray, this process only tokenizes: the actors load (and quantize) the weights
            self.model = load(pretrained, int8=self.int8 and ray is None)
        self.pretrained = self.model.source
        limit = self.model.config.max_position_embeddings
        self.max_length = _count("max_length", max_length, limit)
        if self.max_length > limit:
            raise MinineoError(f"model argument max_length: {self.max_length} is more than the model's "
                               f"max_position_embeddings ({limit})")
        self.tokenizer = self.model.tokenizer
        self.pool = None
        if ray is not None:
            from .distributed import Cluster, Pool
            self.pool = Pool(Cluster(str(ray), model=self.pretrained, int8=self.int8, threads=self.threads))

    # ---- what TemplateLM asks for ----

    @property
    def eot_token_id(self):
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self):   # HFLM: bos if the tokenizer has one, else eos; GPT-2's are the same token
        return self.tokenizer.eos_token_id

    def tok_encode(self, string, add_special_tokens=None, **kwargs):   # GPT-2's BPE adds no special tokens
        return self.tokenizer.encode(string)

    def tok_decode(self, tokens):   # as HFLM: special tokens (<|endoftext|>) left out
        return self.tokenizer.decode([t for t in tokens if t != self.eot_token_id])

    def _loglikelihood_tokens(self, requests, disable_tqdm=False):
        """[((context, continuation), context ids, continuation ids)] -> [(loglikelihood, greedy)]"""
        for (context, continuation), context_ids, continuation_ids in requests:
            if not context_ids or not 1 <= len(continuation_ids) <= self.max_length:
                raise MinineoError(f"{_name(context, continuation)}: {len(context_ids)} context and "
                                   f"{len(continuation_ids)} continuation tokens; expected >= 1 and 1 to "
                                   f"{self.max_length} (max_length)")
        pairs = [(context_ids, continuation_ids) for _, context_ids, continuation_ids in requests]
        bar = tqdm(total=len(pairs), disable=disable_tqdm, desc="Running loglikelihood requests")

        def run(batches):
            if self.pool is not None:
                return self.pool.map(score_batch, [(b,) for b in batches], on_done=lambda i, r: bar.update(len(r)))
            done = []
            for batch in batches:
                done.append(score_batch(self.model, batch))
                bar.update(len(done[-1]))
            return done
        results = score(self.model, pairs, self.batch, self.max_length, run=run)
        bar.close()
        for ((context, continuation), _, _), answer in zip(requests, results):
            if not math.isfinite(answer[0]):   # the model's own check says why: a bad weight, or an overflow
                try:
                    self.model.check_finite(answer[0])
                except MinineoError as e:
                    raise MinineoError(f"{_name(context, continuation)}: the log-likelihood is {answer[0]} ({e})") \
                        from None
            if context is not None:   # a rolling window (no context string): cached per document, below
                self.cache_hook.add_partial("loglikelihood", (context, continuation), answer)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        windows, owner = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            for context, continuation in map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append(((None, text), context, continuation))
                owner.append(i)
        results = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm) if windows else []
        totals = [0.0] * len(requests)
        for i, (loglikelihood, _) in zip(owner, results):   # in window order, as HFLM adds them
            totals[i] += loglikelihood
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm=False):
        jobs, stops = [], []
        eos = self.tokenizer.decode([self.eot_token_id])
        for context, gen_kwargs in (req.args for req in requests):
            kwargs = normalize_gen_kwargs(gen_kwargs, MAX_GEN_TOKS)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks = kwargs.pop("max_gen_toks")
            if kwargs.get("do_sample") or kwargs.get("temperature", 0.0) > 0.0:
                raise MinineoError(f"request {_quote(context)}: minineo's backend decodes greedily; this task "
                                   f"asks for sampling ({gen_kwargs})")
            if max_gen_toks >= self.max_length:
                raise MinineoError(f"request {_quote(context)}: max_gen_toks {max_gen_toks} leaves no room for "
                                   f"the context in max_length {self.max_length}")
            ids = self.tok_encode(context)[-(self.max_length - max_gen_toks):]
            jobs.append((ids, max_gen_toks, until, self.eot_token_id))
            stops.append(until)
        bar = tqdm(total=len(jobs), disable=disable_tqdm, desc="Running generate_until requests")
        if self.pool is not None:
            tokens = self.pool.map(generate_greedy, jobs, on_done=lambda i, r: bar.update(1))
        else:
            tokens = []
            for job in jobs:
                tokens.append(generate_greedy(self.model, *job))
                bar.update(1)
        bar.close()
        texts = []
        for req, new, until in zip(requests, tokens, stops):
            text = postprocess_generated_text(self.tok_decode(new), until, None)
            self.cache_hook.add_partial("generate_until", req.args, text)
            texts.append(text)
        return texts

    def get_model_info(self):
        return {"model": self.pretrained, "int8": self.int8, "max_length": self.max_length}
