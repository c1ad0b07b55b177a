"""minineo's lm-eval backend against lm-eval's own `hf` backend (HFLM), request for request.

One random-weight checkpoint with GPT-2's real vocabulary and a 64-token context (so that documents
need several rolling windows, and long contexts are cut), written by transformers, read by both.
Four local tasks, one per output type, run through lm-eval's `simple_evaluate` with log_samples:
  choices_local   multiple choice (a task defined here): shared contexts, an empty context, a context
                  longer than the model's
  lambada_local   loglikelihood with is_greedy (lm-eval's lambada_openai.yaml on local data)
  wikitext_local  loglikelihood_rolling (lm-eval's wikitext.yaml on local data)
  generate_local  generate_until (defined here): a stop string, max_gen_toks, a context cut from the left
Every log-likelihood must agree to 1e-4 relative, every is_greedy and generated string exactly.
Needs `pip install "torch==2.13.0" "lm-eval[hf]>=0.4,<0.5"`; skipped without it.
"""
import json
import math
import os
import shutil

import pytest

lm_eval = pytest.importorskip("lm_eval")
huggingface = pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval's HFLM needs lm-eval[hf]")
pytest.importorskip("transformers")

import minineo  # noqa: E402
from minineo.text import harness  # noqa: E402,F401  (registers "minineo")
from minineo.text.scoring import generate_greedy  # noqa: E402
from minineo.weights.tokenizer import GPT2_BPE  # noqa: E402

from conftest import hf_model  # noqa: E402

CONTEXT = 64
RELATIVE = 1e-4
MAX_GEN = 8
TASKS = ["choices_local", "lambada_local", "wikitext_local", "generate_local"]

WIKITEXT = [
    " = Valley Line ( Northshire ) = \n \n The Valley Line is a 42 @.@ 5 km ( 26 @.@ 4 mi ) railway in "
    "Northshire , England . It was opened in 1 @,@ 874 by the Northshire Railway Company , whose "
    "directors ' hopes for coal traffic were never met . \n \n = = History = = \n \n The line 's first "
    "engineer , Thomas Hale , proposed a route along the river ; the board preferred a cheaper one "
    "over the hills . \" It will pay for itself within ten years \" , he wrote in 1871 . It did not . \n",
    " = Ælfric of Eynsham = \n \n Ælfric ( c. 955 – c. 1010 ) was an English abbot and a prolific "
    "writer in Old English of hagiography , homilies and biblical commentaries . \n",
    " = Tropical Storm Ana ( 1985 ) = \n \n Tropical Storm Ana was a short @-@ lived storm . \n",
]
PASSAGES = [
    "She opened the old wooden box and found inside a small brass key that fitted the lock on the attic door",
    "The committee met every Thursday in the back room of the library, and every Thursday the "
    "chairman arrived late, apologised, and asked for the minutes of the last meeting. By spring the "
    "secretary had stopped writing them down, and nobody noticed. When the chairman finally asked "
    "who had taken the minutes, the secretary simply pointed at the empty chair by the window",
    "He waited at the corner for an hour before he admitted that she was not  coming",
]
QUESTIONS = [   # (question, choices, answer)
    ("The capital of France is", ["Paris", "London", "a small brass key", "Rome"], 0),
    ("Water boils at", ["100 degrees", "the kettle"], 0),
    ("", ["an empty context", "becomes the prefix token"], 1),
    (PASSAGES[1] + " Then the chairman said", ["nothing", "that the minutes were lost", "goodbye"], 2),
    ("To open a jar, you", ["twist the lid", "twist the lid off", "shout"], 1),
]
PROMPTS = ["Once upon a time", "The capital of France is", PASSAGES[1], "Q: What is two plus two?\nA:"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("harness-ckpt")
    hf_model(directory, seed=3, vocab_size=50257, bos_token_id=50256, eos_token_id=50256,
             max_position_embeddings=CONTEXT)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_BPE / name, directory)
    return directory


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def local_data(data, cache):  # YAML lines that point a task at a local JSON-lines file
    return (f"dataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f"  cache_dir: {cache}\ntraining_split: null\nvalidation_split: null\ntest_split: test\n")


def stop_string(model):
    """A stop string that the random model really produces, a few tokens into the first prompt."""
    ids = model.tokenizer.encode(PROMPTS[0])
    new = generate_greedy(model, ids, MAX_GEN, [], None)
    return model.tokenizer.decode(new[2:3]).strip() or model.tokenizer.decode(new[2:3])


def greedy_passages(model, n=2):
    """Passages whose last word is what this random model predicts greedily, so that is_greedy is true for some."""
    found, words = [], PASSAGES[1].split(" ")
    for k in range(4, len(words)):
        context = " ".join(words[:k])
        ids = model.tokenizer.encode(context)[-CONTEXT:]
        token = int(model.logits(model.forward(ids)[-1]).argmax())
        word = model.tokenizer.decode([token])
        if word.startswith(" ") and word[1:].isalpha() and \
                model.tokenizer.encode(context + word)[-len(ids) - 1:] == ids + [token]:
            found.append(context + word)
        if len(found) == n:
            break
    return found


def write_tasks(directory, model):
    """The four tasks (YAML + local data) in directory."""
    cache, tasks = directory / "cache", os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    choices = write_jsonl(directory / "choices.jsonl",
                          [{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS])
    (directory / "choices_local.yaml").write_text(
        "task: choices_local\noutput_type: multiple_choice\n" + local_data(choices, cache) +
        "doc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    lambada = write_jsonl(directory / "lambada.jsonl", [{"text": t} for t in PASSAGES + greedy_passages(model)])
    (directory / "lambada_local.yaml").write_text(
        f"include: {tasks}/lambada/lambada_openai.yaml\ntask: lambada_local\ntag: []\n" + local_data(lambada, cache))
    wikitext = write_jsonl(directory / "wikitext.jsonl", [{"page": p} for p in WIKITEXT])
    (directory / "wikitext_local.yaml").write_text(
        f"include: {tasks}/wikitext/wikitext.yaml\ntask: wikitext_local\n" + local_data(wikitext, cache))
    prompts = write_jsonl(directory / "prompts.jsonl", [{"prompt": p, "answer": "4"} for p in PROMPTS])
    (directory / "generate_local.yaml").write_text(
        "task: generate_local\noutput_type: generate_until\n" + local_data(prompts, cache) +
        "doc_to_text: '{{prompt}}'\ndoc_to_target: '{{answer}}'\n"
        f"generation_kwargs:\n  until: {json.dumps([stop_string(model)])}\n  max_gen_toks: {MAX_GEN}\n"
        "  do_sample: false\nmetric_list:\n  - metric: exact_match\n    aggregation: mean\n"
        "    higher_is_better: true\n")
    return directory


def run(model, model_args=None, tasks_dir=None):
    from lm_eval.tasks import TaskManager
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=TASKS, bootstrap_iters=0,
                                   log_samples=True,
                                   task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False))


@pytest.fixture(scope="module")
def runs(checkpoint, tmp_path_factory):
    """{"hf" | "minineo" | "int8": simple_evaluate's output} on the same tasks."""
    model = minineo.load(checkpoint)
    tasks_dir = write_tasks(tmp_path_factory.mktemp("harness-tasks"), model)
    hf = huggingface.HFLM(pretrained=str(checkpoint), device="cpu", batch_size=1, dtype="float32")
    assert hf.max_length == CONTEXT and hf.prefix_token_id == model.tokenizer.eos_token_id
    return {"hf": run(hf, tasks_dir=tasks_dir),
            "minineo": run("minineo", f"pretrained={checkpoint},batch_size=3", tasks_dir),
            "int8": run("minineo", f"pretrained={checkpoint},int8=true,threads=1", tasks_dir)}


def samples(out, task):
    return sorted(out["samples"][task], key=lambda s: s["doc_id"])


def flat(resps):  # a sample's responses -> [float or bool or str]
    return [x for resp in resps for value in resp for x in (value if isinstance(value, (list, tuple)) else [value])]


@pytest.mark.parametrize("task", TASKS)
def test_every_request_equals_hf(runs, task):
    ours, theirs = samples(runs["minineo"], task), samples(runs["hf"], task)
    assert [s["doc_id"] for s in ours] == [s["doc_id"] for s in theirs] and ours
    worst = 0.0
    for a, b in zip(ours, theirs):
        assert a["arguments"] == b["arguments"]
        mine, hf = flat(a["resps"]), flat(b["resps"])
        assert len(mine) == len(hf), (a["doc_id"], mine, hf)
        for x, y in zip(mine, hf):
            if isinstance(y, float):
                worst = max(worst, abs(x - y) / max(abs(y), 1e-30))
                assert math.isclose(x, y, rel_tol=RELATIVE), (task, a["doc_id"], x, y)
            else:
                assert x == y, (task, a["doc_id"], x, y)
    print(f"{task}: {len(ours)} documents, largest relative difference {worst:.2g}")


@pytest.mark.parametrize("task", TASKS)
def test_metrics_equal_hf(runs, task):
    ours, theirs = runs["minineo"]["results"][task], runs["hf"]["results"][task]
    metrics = {k: v for k, v in theirs.items() if k.endswith(",none") and "stderr" not in k}
    assert metrics
    for name, value in metrics.items():
        print(f"{task} {name}: minineo {ours[name]!r}  hf {value!r}")
        assert math.isclose(ours[name], value, rel_tol=RELATIVE), (name, ours[name], value)


def test_the_tasks_reach_the_cases_they_are_for(runs, checkpoint):
    model = minineo.load(checkpoint)
    # an empty context, and a context longer than the model's
    args = [s["arguments"] for s in samples(runs["hf"], "choices_local")]
    print("choices_local, document 2:", args[2])
    assert args[2][0][0] == ""
    assert len(model.tokenizer.encode(args[3][0][0])) > CONTEXT
    # documents of several rolling windows
    assert len(model.tokenizer.encode(WIKITEXT[0])) > 2 * CONTEXT
    # a generation cut at the stop string, and one that ran to max_gen_toks
    texts = [s["resps"][0][0] for s in samples(runs["hf"], "generate_local")]
    full = [model.tokenizer.decode(generate_greedy(model, model.tokenizer.encode(p)[-(CONTEXT - MAX_GEN):],
                                                   MAX_GEN, [], None)) for p in PROMPTS]
    print("generated:", texts, "without the stop string:", full)
    assert texts[0] != full[0] and full[0].startswith(texts[0])
    assert any(t == f for t, f in zip(texts, full))
    # lambada: some last words are the greedy prediction, some not
    greedy = [s["resps"][0][0][1] for s in samples(runs["hf"], "lambada_local")]
    assert True in greedy and False in greedy, greedy


def test_int8_changes_the_numbers_a_little(runs):
    for task in TASKS:
        for name, value in runs["minineo"]["results"][task].items():
            if name.endswith(",none") and "stderr" not in name:
                int8 = runs["int8"]["results"][task][name]
                print(f"{task} {name}: float32 {value:.6g}  int8 {int8:.6g}  change {int8 - value:+.3g}")
    lls = [(x, y) for task in ("lambada_local", "wikitext_local", "choices_local")
           for a, b in zip(samples(runs["minineo"], task), samples(runs["int8"], task))
           for x, y in zip(flat(a["resps"]), flat(b["resps"])) if isinstance(x, float)]
    worst = max(abs(y - x) / abs(x) for x, y in lls)
    print(f"int8: {len(lls)} log-likelihoods, largest relative change {worst:.3g}")
    assert 0 < worst < 0.05
