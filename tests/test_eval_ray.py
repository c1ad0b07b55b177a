"""The Ray path of minineo.text.evaluate: the same floats as one process, even when an actor dies.

A local Ray with 2 CPUs (two actors, one thread each, as this process) scores short pieces of the bundled model's
held-out text. Needs `pip install "ray>=2.9"`; skipped without it.
"""
import pytest

ray = pytest.importorskip("ray")

import minineo  # noqa: E402
from minineo.text.distributed import Cluster  # noqa: E402
from minineo.text.evaluate import evaluate  # noqa: E402
from minineo.weights.hub import BUNDLED  # noqa: E402

HELDOUT = (BUNDLED.parent / "neo-shakespeare-heldout.txt").read_text()
# Ten documents of 150-1,500 characters (the longest needs several 256-token windows), and a passage
# set for lambada (the last word of each piece).
DOCUMENTS = [HELDOUT[1000 * i: 1000 * i + 150 * (i + 1)] for i in range(10)]
PASSAGES = [" ".join(HELDOUT[3000 + 400 * i: 3000 + 400 * i + 300].split()) for i in range(10)]


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def model():
    return minineo.load()


@pytest.fixture(autouse=True)
def one_thread():
    # This process at 1 thread, so that the actors (as many threads as this process, by default)
    # fit two to the 2 CPUs on any machine, and compute with the same tiles as this process.
    from minineo.fast.threads import set_threads
    set_threads(1)
    yield
    set_threads(None)


@pytest.mark.parametrize("task, documents", [("pile", DOCUMENTS), ("lambada", PASSAGES)])
def test_ray_equals_one_process_exactly(local_ray, model, task, documents):
    alone = evaluate(model, task, documents=documents)
    spread = evaluate(model, task, documents=documents, ray="auto")   # threads: as this process
    print(f"{task}: one process {alone.metrics} in {alone.seconds:.1f} s; Ray {spread.metrics} in {spread.seconds:.1f} s")
    assert spread.metrics == alone.metrics          # ==, not approximately
    assert spread.per_document == alone.per_document
    assert (spread.documents, spread.tokens, spread.words, spread.bytes) == \
           (alone.documents, alone.tokens, alone.words, alone.bytes)


def test_two_actors_and_a_killed_one_change_nothing(local_ray, model, capfd):
    alone = evaluate(model, "pile", documents=DOCUMENTS)
    seen, killed = set(), []

    def progress(done, total):   # after the first document comes back, kill an actor: it has work queued
        names = sorted(n for n in ray.util.list_named_actors() if n.startswith("minineo-eval-"))
        seen.update(names)
        if not killed:
            ray.kill(ray.get_actor(names[0]))
            killed.append(names[0])

    spread = evaluate(model, "pile", documents=DOCUMENTS, ray=Cluster("auto", threads=1), progress=progress)
    err = capfd.readouterr().err
    print(f"actors {sorted(seen)}; killed {killed[0]}; stderr: {err.strip()}")
    assert len(seen) >= 2 and "a Ray actor died" in err and "go to a new one" in err
    assert spread.metrics == alone.metrics
    assert spread.per_document == alone.per_document


def test_an_actor_that_cannot_load_the_model_is_one_error(local_ray, model, tmp_path):
    with pytest.raises(minineo.MinineoError, match="a Ray actor could not load the model"):
        evaluate(model, "pile", documents=DOCUMENTS[:2], ray=Cluster("auto", model=str(tmp_path / "missing")))
    assert not [n for n in ray.util.list_named_actors() if n.startswith("minineo-eval-")]   # none left behind
