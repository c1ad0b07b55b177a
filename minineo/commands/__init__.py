"""The command lines. Each is `python -m minineo.NAME`: it works wherever minineo is installed, with
no PATH to set up and on Windows alike; `minineo "prompt"` is also a console script (pyproject.toml).
The `python -m` spellings are shims of three lines (minineo/NAME.py, or a package's __main__.py)
that call main() here; common.py is what the commands share.

    python -m minineo "prompt"       generate.py       text from a prompt (also: minineo "prompt")
    python -m minineo.perplexity     perplexity.py     perplexity of a text file
    python -m minineo.eval           evaluate.py       lm-eval's tasks through minineo
    python -m minineo.quantize       quantize.py       an int8 copy of a checkpoint
    python -m minineo.bench          bench.py          speed and memory against transformers
                                     measure_configuration.py   (one of bench's child processes)
    python -m minineo.calibrate      calibrate.py      measure this CPU's fast choices again
    python -m minineo.train          train.py          train a GPT-Neo on a text file
    python -m minineo.train.bench    train_bench.py    a training step against PyTorch's
    python -m minineo.course         course.py         an exercise workspace, or the notebooks as pages
    python -m minineo.check          check.py          check a student's function
"""
