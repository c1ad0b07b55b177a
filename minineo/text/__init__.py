"""Using a model: choosing the next token (sampling), generating text (generate, stream, pipeline)
and scoring it (perplexity; scoring, harness, tasks and distributed: lm-eval's tasks on minineo)."""
