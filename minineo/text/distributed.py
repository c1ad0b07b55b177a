"""lm-eval's requests spread over Ray actors: many cores or many machines, same numbers.

    ray start --head                       # on one machine; `ray start --address HEAD:6379` on the others
    python -m minineo.eval --tasks lambada_openai --model 2.7B --ray auto

How it works. This process (the driver) runs lm-eval: it builds the requests of every task and
tokenizes them, as alone. minineo's backend (minineo/text/harness.py) then hands its work to a Pool
instead of computing it: the batches of minineo/text/scoring.py (log-likelihood requests and
rolling windows, a whole group of endings that share a context in one batch) and the generations.
The pool starts actors: each loads the model once, by name (memory-mapped, so actors on one machine
share the weights' pages), and runs the jobs it is sent: (index, function, arguments) -> (index,
result). The driver keeps each result at its job's index, so lm-eval receives the answers in the
order it asked, and the metrics are the same floats as in one process: a batch's result does not
depend on which actor computes it. Bit for bit, that needs the actors to compute as this process
does: the same number of threads (the default; a different count changes how the matrix products
are cut into tiles, and so the last bits of a few sums) and machines with the same BLAS kernels (the
same CPU family and NumPy). Otherwise the results agree to about 1e-6 relative (float32 rounding).

Scheduling: jobs go out in the order given (scoring.plan puts the longest batches first, so a long
one does not start last and keep one actor busy while the others idle), two jobs in flight per actor.

Failures: an actor that dies (killed, out of memory, its machine lost) takes its unfinished jobs with
it. The driver sees their calls fail, puts those jobs back in the queue, and starts a new actor in
its place; they run again from the start, and the result does not change. After too many deaths it
gives up with an error.

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

IN_FLIGHT = 2   # calls queued at each actor: it starts the next job while its result travels


@dataclass
class Cluster:
    """Where and how to run. address: "auto" (the cluster `ray start` made on this machine), "local"
    (start Ray here, for trying it), or "HOST:6379" / "ray://HOST:10001". model / int8: what each
    actor loads. threads: per actor, and the CPUs each reserves (default: what this process uses,
    minineo.fast.threads.get_threads(), if a machine has that many CPUs). actors: how many (default
    and most: as many as the machines' CPUs fit)."""
    address: str = "auto"
    model: str | None = None
    int8: bool = False
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


class Worker:
    """A Ray actor: one model, loaded once, running the jobs it is sent."""

    def __init__(self, model, int8, threads):
        set_threads(threads)
        self.model = load(model, int8=int8)

    def ready(self):
        return True

    def run(self, index, function, args):  # -> (index, function(model, *args))
        return index, function(self.model, *args)


def _reason(error):  # the last line of a Ray error (its message is the remote traceback)
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


class Pool:
    """Actors that each hold the model; map() runs jobs on them. Started on first use, stopped by close()."""

    def __init__(self, cluster):
        self.ray = _import_ray()
        self.cluster, self.actors, self.started = cluster, [], 0
        self.run_id = uuid.uuid4().hex[:8]

    def _new_actor(self):  # named, so that the dashboard (and the tests) can find it
        self.started += 1
        return self.remote.options(name=f"minineo-eval-{self.run_id}-{self.started - 1}").remote(
            self.cluster.model, self.cluster.int8, self.threads)

    def _start(self, n_jobs):
        ray, cluster = self.ray, self.cluster
        connect(ray, cluster.address)
        # An actor runs on one machine: it fits where that machine has `threads` CPUs.
        cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
        self.threads = cluster.threads or min(get_threads(), max(cpus, default=1)) or 1
        if self.threads > max(cpus, default=0):
            raise MinineoError(f"no machine of the Ray cluster has {self.threads} CPUs for one actor (the "
                               f"largest has {max(cpus, default=0)}); use fewer threads (--threads)")
        fit = sum(c // self.threads for c in cpus)
        self.remote = ray.remote(num_cpus=self.threads)(Worker)
        self.actors = [self._new_actor() for _ in range(min(cluster.actors or fit, fit, n_jobs))]
        try:   # a model that cannot load fails here, once, with the actor's own message
            ray.get([actor.ready.remote() for actor in self.actors])
        except ray.exceptions.RayError as e:
            self.close()
            raise MinineoError(f"a Ray actor could not load the model {cluster.model!r}: {_reason(e)}") from None

    def close(self):
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []

    def map(self, function, jobs, on_done=None):
        """[args] -> [function(model, *args)] in the same order, computed by the actors.
        on_done(index, result) is called as each result comes back."""
        ray = self.ray
        if not jobs:
            return []
        if not self.actors:
            self._start(len(jobs))
        results = [None] * len(jobs)
        todo = deque(range(len(jobs)))
        running = {}                     # the call's ObjectRef -> (actor, job index)
        busy = {actor: 0 for actor in self.actors}
        deaths, max_deaths = 0, 2 * len(self.actors) + 2

        def feed(actor):
            while todo and busy[actor] < IN_FLIGHT:
                i = todo.popleft()
                running[actor.run.remote(i, function, jobs[i])] = (actor, i)
                busy[actor] += 1

        try:
            for actor in list(busy):
                feed(actor)
            while running:
                [ref], _ = ray.wait(list(running), num_returns=1)
                actor, i = running.pop(ref)
                try:
                    index, result = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    # The actor is gone, and with it every call still queued there: back into the queue
                    # (in front: they were next), and a new actor takes its place.
                    lost = [i] + [j for other, (a, j) in list(running.items()) if a is actor]
                    for other in [other for other, (a, _) in running.items() if a is actor]:
                        del running[other]
                    todo.extendleft(sorted(lost, reverse=True))
                    del busy[actor]
                    self.actors.remove(actor)
                    ray.kill(actor)   # if it is only unreachable, it must not come back and hold its CPUs
                    deaths += 1
                    if deaths > max_deaths:
                        raise MinineoError(f"Ray actors died {deaths} times; giving up ({_reason(e)})") from None
                    print(f"minineo: a Ray actor died ({_reason(e)[:120]}); its {len(lost)} unfinished "
                          f"job{'s' * (len(lost) != 1)} go to a new one", file=sys.stderr, flush=True)
                    replacement = self._new_actor()
                    self.actors.append(replacement)
                    busy[replacement] = 0
                    feed(replacement)
                    continue
                results[index] = result
                busy[actor] -= 1
                if on_done is not None:
                    on_done(index, result)
                feed(actor)
        except BaseException:
            self.close()
            raise
        return results
