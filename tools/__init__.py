"""Command-line tools that are not training, testing or metrics (``python -m tools.NAME``)."""
