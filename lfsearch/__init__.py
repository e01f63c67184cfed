"""lfsearch: automated loss-function search for deep face recognition and metric learning.

    import lfsearch
    results = lfsearch.search("search_softmax", epochs=5)   # a run, as `lfsearch search` does

Sub-modules load on first use (`lfsearch.losses`, `lfsearch.data`, ...), so importing the
package alone is cheap.
"""

import importlib

__version__ = "0.1.0"

_MODULES = ("margins", "losses", "models", "data", "evaluate", "controllers", "config",
            "population", "packing", "search", "distributed", "compare", "report", "study")


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"lfsearch.{name}")
    raise AttributeError(f"module 'lfsearch' has no attribute {name!r}")
