"""The documents of an evaluation spread over Ray actors: many cores or many machines, same numbers.

    ray start --head                       # on one machine; `ray start --address HEAD:6379` on the others
    python -m minineo.eval --task wikitext --model 2.7B --ray auto

How it works. This process (the driver) reads and tokenises the documents exactly as evaluate()
does alone, and starts actors: each loads the model once, by name (memory-mapped, so actors on one
machine share the weights' pages), and scores the documents it is sent, one call per document:
(index, Request) -> (index, loglikelihood, greedy). The driver keeps each result at its document's
index and reduces them in document order once all are in, so the metrics are the same floats as
in one process: a document's score does not depend on which actor computes it. Bit for bit, that
needs the actors to compute as this process does: the same number of threads (the default; a
different count changes how the matrix products are cut into tiles, and so the last bits of a few
sums) and machines with the same BLAS kernels (the same CPU family and NumPy). Otherwise the
metrics agree to about 1e-8 relative (float32 rounding).

Scheduling: the longest documents go first (started last, a long one would keep one actor busy
while the others idle), two documents in flight per actor.

Failures: an actor that dies (killed, out of memory, its machine lost) takes its unfinished
documents with it. The driver sees their calls fail, puts those documents back in the queue, and
starts a new actor in its place; they are scored again from the start, and the result does not
change. After too many deaths it gives up with an error.

Ray is optional (pip install "ray>=2.9"). minineo must be installed on every machine, and the model
name must resolve on each: a Hub id or preset (each machine downloads or finds it in its cache) or a
directory at the same path everywhere.
"""
import logging
import sys
import uuid
from collections import deque
from dataclasses import dataclass

from ..errors import MinineoError
from ..fast.threads import get_threads, set_threads
from ..weights import load

IN_FLIGHT = 2   # calls queued at each actor: it starts the next document while its result travels


@dataclass
class Cluster:
    """Where and how to run. address: "auto" (the cluster `ray start` made on this machine), "local"
    (start Ray here, for trying it), or "HOST:6379" / "ray://HOST:10001". model / int8: what each
    actor loads (default: the evaluated model's directory and weights). threads: per actor, and the
    CPUs each reserves (default: what this process uses, minineo.fast.threads.get_threads(), if a
    machine has that many CPUs). actors: how many (default and most: as many as the machines' CPUs fit)."""
    address: str = "auto"
    model: str | None = None
    int8: bool | None = None
    threads: int | None = None
    actors: int | None = None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MinineoError("--ray needs Ray: pip install \"ray>=2.9\" (or pip install 'minineo[ray]')") from None
    return ray


def connect(ray, address):
    """ray.init for `address`, unless this process is connected already."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=None if address == "local" else address, logging_level=logging.ERROR,
                 log_to_driver=False, configure_logging=True)
    except (ConnectionError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MinineoError(f"could not connect to Ray at {address!r}: {first} (start a cluster with "
                           f"`ray start --head`, or use --ray local)") from None


class Scorer:
    """A Ray actor: one model, loaded once, scoring the documents it is sent with score_request."""

    def __init__(self, model, int8, threads, score_request):
        set_threads(threads)
        self.model = load(model, int8=int8)
        self.score_request = score_request

    def ready(self):
        return True

    def score(self, index, request):  # -> (index, (loglikelihood, greedy))
        return index, self.score_request(self.model, request)


def _reload_spec(model):  # -> (name, int8): how an actor loads the same weights as `model`
    first = model.params["blocks"][0]["mlp"]["c_fc"]["w"] if model.params.get("blocks") else None
    return model.source, type(first).__name__ == "Int8Weight"


def _reason(error):  # the last line of a Ray error (its message is the remote traceback)
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def score_on_ray(model, requests, cluster, progress=None, *, score_request):
    """[Request] -> [(loglikelihood, greedy)] in the same order, each score_request(model, request)
    computed by a Ray actor. (evaluate.py passes its function in, so that this module need not import it.)"""
    ray = _import_ray()
    if isinstance(cluster, str):
        cluster = Cluster(cluster)
    name, int8 = _reload_spec(model)
    name = cluster.model if cluster.model is not None else name
    int8 = cluster.int8 if cluster.int8 is not None else int8
    connect(ray, cluster.address)

    # An actor runs on one machine: it fits where that machine has `threads` CPUs.
    cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    threads = cluster.threads or min(get_threads(), max(cpus, default=1)) or 1
    if threads > max(cpus, default=0):
        raise MinineoError(f"no machine of the Ray cluster has {threads} CPUs for one actor (the largest "
                           f"has {max(cpus, default=0)}); use fewer threads (--threads)")
    fit = sum(c // threads for c in cpus)
    n_actors = min(cluster.actors or fit, fit, len(requests))
    remote_scorer = ray.remote(num_cpus=threads)(Scorer)
    run = uuid.uuid4().hex[:8]
    started = 0

    def new_actor():  # named, so that the dashboard (and the tests) can find it
        nonlocal started
        started += 1
        return remote_scorer.options(name=f"minineo-eval-{run}-{started - 1}").remote(name, int8, threads, score_request)

    actors = [new_actor() for _ in range(n_actors)]
    try:   # a model that cannot load fails here, once, with the actor's own message
        ray.get([actor.ready.remote() for actor in actors])
    except ray.exceptions.RayError as e:
        for actor in actors:
            ray.kill(actor)
        raise MinineoError(f"a Ray actor could not load the model {name!r}: {_reason(e)}") from None

    results = [None] * len(requests)
    todo = deque(sorted(range(len(requests)), key=lambda i: -requests[i].tokens))   # longest first
    running = {}                     # the call's ObjectRef -> (actor, document index)
    busy = {actor: 0 for actor in actors}
    deaths, max_deaths = 0, 2 * n_actors + 2
    done_tokens, total_tokens = 0, sum(r.tokens for r in requests)

    def feed(actor):
        while todo and busy[actor] < IN_FLIGHT:
            i = todo.popleft()
            running[actor.score.remote(i, requests[i])] = (actor, i)
            busy[actor] += 1

    try:
        for actor in actors:
            feed(actor)
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, i = running.pop(ref)
            try:
                index, result = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                # The actor is gone, and with it every call still queued there: back into the queue
                # (in front: they were next), and a new actor takes its place.
                lost = [i]
                for other, (a, j) in list(running.items()):
                    if a is actor:
                        del running[other]
                        lost.append(j)
                todo.extendleft(sorted(lost, key=lambda j: requests[j].tokens))
                del busy[actor]
                ray.kill(actor)   # if it is only unreachable, it must not come back and hold its CPUs
                deaths += 1
                if deaths > max_deaths:
                    raise MinineoError(f"Ray actors died {deaths} times; giving up ({_reason(e)})") from None
                print(f"minineo: a Ray actor died ({_reason(e)[:120]}); its {len(lost)} unfinished "
                      f"document{'s' * (len(lost) != 1)} go to a new one", file=sys.stderr, flush=True)
                replacement = new_actor()
                busy[replacement] = 0
                feed(replacement)
                continue
            results[index] = result
            busy[actor] -= 1
            done_tokens += requests[index].tokens
            if progress is not None:
                progress(done_tokens, total_tokens)
            feed(actor)
    finally:
        for actor in busy:
            ray.kill(actor)
    return results
