"""The backend's requests on Ray actors: the same floats and strings as one process, even when an actor dies.

A local Ray with 2 CPUs (two actors, one thread each, as this process) answers requests on pieces of
the bundled model's held-out text. Needs `pip install "ray>=2.9"` and lm-eval; skipped without them.
"""
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("lm_eval")

import minineo  # noqa: E402
from minineo.text.distributed import Cluster, Pool  # noqa: E402
from minineo.text.harness import MinineoLM  # noqa: E402
from minineo.text.scoring import plan, score_batch  # noqa: E402
from minineo.weights.hub import BUNDLED  # noqa: E402

HELDOUT = (BUNDLED.parent / "neo-shakespeare-heldout.txt").read_text()
DOCUMENTS = [HELDOUT[1000 * i: 1000 * i + 150 * (i + 1)] for i in range(6)]   # the longest: several windows
CONTEXTS = [" ".join(HELDOUT[3000 + 400 * i: 3000 + 400 * i + 200].split()) for i in range(5)]
ENDINGS = [" my lord", " the king", " and so", " sir"]


class Request:   # what lm-eval's Instance gives a backend: .args
    def __init__(self, *args):
        self.args = args


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)   # never another session's cluster
    yield
    if started:
        ray.shutdown()


@pytest.fixture(autouse=True)
def one_thread():
    # This process at 1 thread, so that two actors (1 thread each) fit the 2 CPUs on any machine,
    # and compute with the same tiles as this process.
    from minineo.fast.threads import set_threads
    set_threads(1)
    yield
    set_threads(None)


def test_ray_equals_one_process_exactly(local_ray):
    alone, spread = MinineoLM(threads=1, batch_size=3), MinineoLM(threads=1, batch_size=3, ray="auto")
    requests = {"loglikelihood": [Request(c, e) for c in CONTEXTS for e in ENDINGS],
                "loglikelihood_rolling": [Request(d) for d in DOCUMENTS],
                "generate_until": [Request(c, {"until": ["\n"], "max_gen_toks": 12}) for c in CONTEXTS[:4]]}
    try:
        for kind, batch in requests.items():
            ours, theirs = (getattr(lm, kind)(batch, disable_tqdm=True) for lm in (alone, spread))
            print(f"{kind}: one process {ours[:2]}..., Ray {theirs[:2]}...")
            assert theirs == ours, kind     # ==, not approximately
        assert len(spread.pool.actors) == 2
    finally:
        spread.pool.close()


def test_a_killed_actor_changes_nothing(local_ray, capfd):
    model = minineo.load()
    pairs = [(model.tokenizer.encode(c), model.tokenizer.encode(e)) for c in CONTEXTS for e in ENDINGS]
    batches = plan(pairs, model.config.max_position_embeddings, 2)
    alone = [score_batch(model, b) for b in batches]
    pool, killed = Pool(Cluster("auto", model=model.source, threads=1)), []

    def on_done(index, result):   # after the first result comes back, kill an actor: it has work queued
        if not killed:
            names = sorted(n for n in ray.util.list_named_actors() if n.startswith(f"minineo-eval-{pool.run_id}"))
            ray.kill(ray.get_actor(names[0]))
            killed.append(names[0])

    try:
        spread = pool.map(score_batch, [(b,) for b in batches], on_done=on_done)
    finally:
        pool.close()
    err = capfd.readouterr().err
    print(f"{len(batches)} batches; killed {killed}; stderr: {err.strip()}")
    assert killed and "a Ray actor died" in err and "go to a new one" in err and pool.started == 3
    assert spread == alone


def test_an_actor_that_cannot_load_the_model_is_one_error(local_ray, tmp_path):
    pool = Pool(Cluster("auto", model=str(tmp_path / "missing"), threads=1))
    with pytest.raises(minineo.MinineoError, match="a Ray actor could not load the model"):
        pool.map(score_batch, [([],)])
    assert not [n for n in ray.util.list_named_actors() if n.startswith(f"minineo-eval-{pool.run_id}")]
