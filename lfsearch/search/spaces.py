"""The bundled search spaces: list them, show one, copy one for a user to edit.

The files live in the repository's top-level ``search_spaces/`` (the one source of truth);
the package ships them as ``lfsearch/search_spaces/`` (a symlink in a git clone, copies in a
wheel), so that ``lfsearch search cosface`` works from any folder after ``pip install .``.
See docs/architecture.md. Every ``*.toml`` there is a bundled space, named by its file stem.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from lfsearch.paths import describe_os_error
from lfsearch.search import config as config_mod


def space_path(name: str) -> Path:
    """The bundled file of a space name; ValueError naming the known ones otherwise."""
    known = config_mod.bundled_spaces()
    stem = name[:-5] if name.endswith(".toml") else name
    if stem not in known:
        allowed = ", ".join(known) or f"(none found in {config_mod.SPACES_DIR})"
        raise ValueError(f"NAME {name!r} is not a bundled search space; allowed: {allowed}")
    return config_mod.SPACES_DIR / f"{stem}.toml"


def describe() -> list[tuple[str, str]]:
    """(name, [method] description) of every bundled space, sorted by name."""
    rows = []
    for name in config_mod.bundled_spaces():
        path = config_mod.SPACES_DIR / f"{name}.toml"
        try:
            method = tomllib.loads(path.read_text()).get("method", {})
            text = method.get("description", "") if isinstance(method, dict) else ""
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            text = f"(unreadable: {exc})"
        rows.append((name, " ".join(str(text).split())))
    return rows


def listing() -> str:
    """The text `lfsearch spaces` prints: one line per space, then where they are."""
    rows = describe()
    width = max((len(n) for n, _ in rows), default=0)
    lines = [f"{name:<{width}}  {text}" for name, text in rows]
    lines.append(f"({len(rows)} spaces in {config_mod.SPACES_DIR.resolve()}; "
                 "an editable copy: lfsearch spaces copy NAME DEST)")
    return "\n".join(lines)


def copy_space(name: str, dest: str | os.PathLike, *, force: bool = False) -> Path:
    """Copy a bundled space's file byte for byte (comments kept) to `dest`; returns the path.

    `dest` is a folder (an existing one, or a path ending in '/': NAME.toml inside it) or a
    file path ending in .toml. An existing file is replaced only with force=True; the copy is
    written to a temporary file and renamed, so a half-written file is never left.
    """
    source = space_path(name)
    text = str(dest)
    dest = Path(dest)
    if dest.is_dir() or text.endswith(("/", os.sep)):
        target = dest / source.name
    elif dest.suffix == ".toml":
        target = dest
    else:
        raise ValueError(f"DEST {text!r} must be a folder (an existing one, or ending in '/') "
                         "or a file path ending in .toml")
    if target.is_dir():
        raise ValueError(f"DEST {str(target)!r} is a folder; give a file path ending in .toml")
    if target.exists() and not force:
        raise ValueError(f"{target} exists; give another DEST, or --force to replace it")
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(source.read_bytes())
        os.replace(tmp, target)
    except OSError as exc:
        raise ValueError(f"DEST {str(target)!r} cannot be written: "
                         f"{describe_os_error(exc, target)}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # its folder could not be made: there is no temporary file
            pass
    return target
