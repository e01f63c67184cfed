"""Parsers of a benchmark spec's option values (`?size=112x112&channels=3&...`); each error
names the option and its allowed values."""

from __future__ import annotations

from typing import Any, Callable


def _parse_size(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        h, w = value
    elif isinstance(value, int):
        h = w = value
    else:
        text = str(value).lower().strip()
        parts = text.split("x")
        try:
            h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]),
                                                                           int(parts[1]))
        except ValueError:
            h = w = -1
        if len(parts) > 2:
            h = -1
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
        raise ValueError(f"option {name}={value!r}: expected H or HxW with positive integers, "
                         "e.g. 112x96")
    return int(h), int(w)


def _parse_channels(value: Any, name: str) -> int:
    try:
        c = int(value)
    except (TypeError, ValueError):
        c = 0
    if c not in (1, 3):
        raise ValueError(f"option {name}={value!r}: allowed values 1 (grey) or 3 (RGB)")
    return c


def _parse_fraction(value: Any, name: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = -1.0
    if not 0.0 <= f < 1.0:
        raise ValueError(f"option {name}={value!r}: expected a fraction in [0, 1)")
    return f


def _parse_count(minimum: int) -> Callable[[Any, str], int]:
    def parse(value: Any, name: str) -> int:
        try:
            v = int(value)
            ok = v >= minimum and float(value) == v
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"option {name}={value!r}: expected an integer >= {minimum}")
        return v
    return parse


def _parse_text(value: Any, name: str) -> str:
    return str(value)


def _parse_stream(value: Any, name: str) -> str:
    text = str(value).strip().lower()
    if text not in ("auto", "yes", "no"):
        raise ValueError(f"option {name}={value!r}: allowed values auto (stream the training "
                         "split when it exceeds 1 GiB decoded), yes, no")
    return text


def _parse_flip(value: Any, name: str) -> bool:
    text = str(value).strip().lower()
    if text not in ("yes", "no"):
        raise ValueError(f"option {name}={value!r}: allowed values yes (test embeddings are "
                         "f(x) + f(mirror(x))), no")
    return text == "yes"


def _parse_counts(value: Any, name: str) -> tuple[int, ...]:
    items = value if isinstance(value, (tuple, list)) else str(value).split(",")
    try:
        counts = tuple(int(v) for v in items)
    except (TypeError, ValueError):
        counts = ()
    if not counts or any(c < 0 for c in counts):
        raise ValueError(f"option {name}={value!r}: expected integers >= 0 separated by commas, "
                         "e.g. 10,100,1000")
    return counts


def _parse_target(value: Any, name: str) -> str:
    text = str(value).strip().lower()
    if text not in ("ijbb", "ijbc"):
        raise ValueError(f"option {name}={value!r}: allowed values ijbb, ijbc")
    return text


def _parse_align(value: Any, name: str) -> bool:
    text = str(value).strip().lower()
    if text not in ("yes", "no"):
        raise ValueError(f"option {name}={value!r}: allowed values yes (warp each loose crop by "
                         "its 5 landmarks onto ArcFace's 112x112 template), no (use the crops "
                         "as they are)")
    return text == "yes"


PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "size": _parse_size, "crop": _parse_size, "channels": _parse_channels,
    "val": _parse_fraction, "test": _parse_fraction, "pairs": _parse_count(2),
    "train_classes": _parse_count(1), "pairs_file": _parse_text, "stream": _parse_stream,
    "workers": _parse_count(0), "prefetch": _parse_count(1), "flip": _parse_flip,
    "target": _parse_target, "distractors": _parse_text, "distractor_counts": _parse_counts,
    "gallery": _parse_count(1), "align": _parse_align,
}
