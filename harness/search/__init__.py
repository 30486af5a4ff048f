"""Per-method hyperparameter search: spaces (``space``), proposals (``strategies``), pruning on
the validation curve (``pruning``) and trials as ordinary cells with a selection on validation
only, per seed or once on ``select_on`` seeds (``driver``). Guide: docs/search.md."""
