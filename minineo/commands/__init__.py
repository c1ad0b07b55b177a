"""The command lines: `python -m minineo` (generate.py), `python -m minineo.perplexity`,
`python -m minineo.quantize` and `python -m minineo.bench`; common.py is what they share."""
