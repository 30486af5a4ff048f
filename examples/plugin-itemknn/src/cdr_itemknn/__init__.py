"""ItemKNN for cdr-harness, installed as a method plugin (entry point group
``cdr_harness.methods``; see the README beside pyproject.toml)."""

from cdr_itemknn.itemknn import ItemKNN, ItemKNNParams

__all__ = ["ItemKNN", "ItemKNNParams"]
__version__ = "0.1.0"
