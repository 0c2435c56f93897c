"""Framework utilities: configuration, logging, checkpoints."""
