"""Per-method hyperparameter search: spaces (``space``), proposals (``strategies``) and trials as
ordinary cells with a selection per seed on validation (``driver``). README: "Hyperparameter
search"."""
