"""lfsearch: automated loss-function search for deep face recognition and metric learning.

    import lfsearch
    results = lfsearch.search("search_softmax", epochs=5)   # a run, as `lfsearch search` does

Sub-packages load on first use (`lfsearch.losses`, `lfsearch.search`, ...), so importing the
package alone is cheap. docs/architecture.md draws the layers.
"""

import importlib

__version__ = "0.1.0"

#: The layers of docs/architecture.md, lowest first.
_MODULES = ("paths", "losses", "data", "models", "evaluation", "search", "experiments", "report")


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"lfsearch.{name}")
    raise AttributeError(f"module 'lfsearch' has no attribute {name!r}")
