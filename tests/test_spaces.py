"""The bundled search spaces: one source of truth (search_spaces/), shipped in the package,
listed, shown and copied by `lfsearch spaces`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from lfsearch.cli import main as cli_main
from lfsearch.search import config as config_mod

REPO = Path(__file__).resolve().parents[1]
TOP = REPO / "search_spaces"
FILES = sorted(TOP.glob("*.toml"))


def test_the_package_folder_is_the_top_level_folder():
    """lfsearch/search_spaces is a symlink to ../search_spaces (no second copy to drift)."""
    link = REPO / "lfsearch" / "search_spaces"
    assert link.is_symlink() and os.readlink(link) == "../search_spaces"
    assert config_mod.SPACES_DIR.resolve() == TOP.resolve()
    assert config_mod.bundled_spaces() == [p.stem for p in FILES] and len(FILES) >= 10
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "search_spaces/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["lfsearch"]


def test_spaces_lists_every_file_with_its_description(capsys):
    assert cli_main(["spaces"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(FILES) + 1
    for line, path in zip(lines, FILES):
        description = tomllib.loads(path.read_text())["method"]["description"]
        assert line.split()[0] == path.stem and line.endswith(description), line
    assert str(TOP.resolve()) in lines[-1] and "lfsearch spaces copy NAME DEST" in lines[-1]


def test_spaces_show_prints_the_file(capsys):
    assert cli_main(["spaces", "show", "cosface"]) == 0
    assert capsys.readouterr().out == (TOP / "cosface.toml").read_text()


def test_spaces_copy_writes_an_identical_file_and_refuses_to_overwrite(tmp_path, capsys):
    source = (TOP / "search_softmax.toml").read_bytes()
    assert cli_main(["spaces", "copy", "search_softmax", str(tmp_path)]) == 0
    copied = tmp_path / "search_softmax.toml"
    assert copied.read_bytes() == source  # comments kept, byte for byte
    assert str(copied) in capsys.readouterr().out
    copied.write_text("# my edits\n")
    assert cli_main(["spaces", "copy", "search_softmax", str(copied)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err and "--force" in err
    assert copied.read_text() == "# my edits\n"  # untouched
    assert cli_main(["spaces", "copy", "search_softmax", str(copied), "--force"]) == 0
    assert copied.read_bytes() == source
    # a new folder (trailing slash) is created; a file name must end in .toml
    assert cli_main(["spaces", "copy", "cosface", f"{tmp_path}/new/"]) == 0
    assert (tmp_path / "new" / "cosface.toml").read_bytes() == (TOP / "cosface.toml").read_bytes()
    assert cli_main(["spaces", "copy", "cosface", str(tmp_path / "mine.txt")]) == 2
    assert ".toml" in capsys.readouterr().err and not (tmp_path / "mine.txt").exists()
    # the copy is a valid space that loads as the original does
    a, b = config_mod.load(copied), config_mod.load("search_softmax")
    assert {k: v for k, v in a.items() if k != "_source"} == \
        {k: v for k, v in b.items() if k != "_source"}
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_spaces_copy_of_an_unknown_name_lists_the_known_ones(tmp_path, capsys):
    assert cli_main(["spaces", "copy", "nosuch", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nosuch" in err and "cosface" in err and "search_softmax" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_built_wheel_ships_every_space_and_searches_from_an_empty_folder(tmp_path):
    """Build a wheel from a copy of the repository (not editable) and run the README's command
    with only that wheel's files on the path, from an empty folder."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", "runs", "build", "*.egg-info",
                                                  "__pycache__", ".pytest_cache", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(src)], check=True)
    wheel = next((tmp_path / "dist").glob("lfsearch-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for path in FILES:  # every top-level file, as a real file with the same bytes
            assert z.read(f"lfsearch/search_spaces/{path.name}") == path.read_bytes()
        z.extractall(site)
    assert not any(n.startswith("search_spaces/") for n in names)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "lfsearch", "search", "search_softmax",
                          "--epochs", "1", "--candidates", "2", "--threads", "1", "--quiet"],
                         cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert (empty / "runs" / "search_softmax-digits-seed0" / "results.json").is_file()
    listed = subprocess.run([sys.executable, "-m", "lfsearch", "spaces"], cwd=empty, env=env,
                            capture_output=True, text=True, check=True).stdout
    assert str(site / "lfsearch" / "search_spaces") in listed
