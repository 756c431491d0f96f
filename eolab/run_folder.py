"""The files of a run folder, named once: the pipeline writes them, the runner, the reports and the
embedding benchmark read them (a leaf module, so both sides import it without importing each other)."""

RECORD_NAME = "record.json"
"""Parameters, metrics, folds, seed, commit: what the run measured."""
HISTORY_NAME = "history.csv"
"""One row per optimiser step: loss, learning rate, health."""
ENCODER_NAME = "encoder.pt"
"""The pre-trained encoder with its normalisation (``eolab.checkpoint``)."""
SAMPLE_NAME = "sample.json"
"""The pre-training patch ids a sampler drew (with sampler and hash), when ``n_pretrain`` is set."""
BENCHMARK_NAME = "benchmark.csv"
"""The embedding benchmark's table, when the run ended with it (``benchmark``); ``benchmark.json`` beside it."""
