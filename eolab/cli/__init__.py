"""Command-line programs of ``python -m eolab`` that need the training stack (imported only when run)."""
