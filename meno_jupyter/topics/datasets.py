"""Real labelled corpora every Debian/Python machine has without a network.

- :func:`docstring_corpus`: first paragraphs of the public docstrings of Python packages,
  labelled by package (hundreds to ~11,000 documents).
- :func:`debian_descriptions`: the one-line descriptions of Debian's packages from the
  apt lists, labelled by section (~60,000 documents after ``apt-get update``).

The tutorial, the tests and the benchmarks use them; topics found on them can be scored
against the labels (NMI).
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import inspect
import io
import lzma
import pkgutil
import subprocess
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

STDLIB_PACKAGES = ("json", "email", "http", "xml", "logging", "unittest", "asyncio",
                   "sqlite3", "urllib", "concurrent")
APT_LISTS = Path("/var/lib/apt/lists")
APT_HELPER = Path("/usr/lib/apt/apt-helper")


def _module_names(package: str) -> list[str]:
    root = importlib.import_module(package)
    found = pkgutil.walk_packages(getattr(root, "__path__", []), prefix=f"{package}.",
                                  onerror=lambda name: None)
    return [package, *sorted(m.name for m in found
                             if ".test" not in m.name and not m.name.endswith("__main__"))]


def _first_paragraphs(module_name: str, min_chars: int, max_chars: int) -> Iterator[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(module_name)
    except BaseException:  # a module that cannot be imported here simply gives nothing
        return
    for attr, value in sorted(vars(module).items()):
        if attr.startswith("_") or getattr(value, "__module__", None) != module_name:
            continue
        try:
            doc = inspect.getdoc(value) or ""
        except Exception:
            continue
        head = doc.split("\n\n")[0].replace("\n", " ").strip()
        if len(head) >= min_chars:
            yield head[:max_chars]


def docstring_corpus(
    packages: Sequence[str] = STDLIB_PACKAGES,
    *,
    per_package: int | None = None,
    min_chars: int = 30,
    max_chars: int = 300,
) -> pd.DataFrame:
    """Return a ``text``/``label`` frame of docstring first paragraphs, labelled by package.

    Parameters
    ----------
    packages : sequence of str
        Importable packages (default: ten standard-library ones, ~900 documents).
    per_package : int, optional
        Keep at most this many documents of each package.
    min_chars, max_chars : int
        Drop shorter paragraphs; cut longer ones.

    Examples
    --------
    >>> corpus = docstring_corpus(["json"])
    >>> sorted(set(corpus["label"]))
    ['json']
    """
    import pandas as pd

    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for package in packages:
        try:
            names = _module_names(package)
        except ImportError:
            raise ValueError(f"{package!r} is not an importable package here") from None
        kept = 0
        for name in names:
            for text in _first_paragraphs(name, min_chars, max_chars):
                if text not in seen and (per_package is None or kept < per_package):
                    seen.add(text)
                    rows.append((text, package))
                    kept += 1
    frame: pd.DataFrame = pd.DataFrame(rows, columns=["text", "label"])
    return frame


def _read_index(path: Path) -> str:
    """Return an apt ``Packages`` index as text, whatever its compression."""
    if path.suffix == ".lz4":  # apt's default on Debian; Python has no lz4 in the stdlib
        done = subprocess.run([str(APT_HELPER), "cat-file", str(path)], capture_output=True,
                              check=True)
        return done.stdout.decode("utf-8", "replace")
    if path.suffix in (".gz", ".xz"):
        with (gzip.open(path) if path.suffix == ".gz" else lzma.open(path)) as packed:
            return io.TextIOWrapper(packed, encoding="utf-8", errors="replace").read()
    return path.read_text(encoding="utf-8", errors="replace")


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def debian_descriptions(lists_dir: str | Path = APT_LISTS) -> pd.DataFrame:
    """Return a ``text``/``label``/``package`` frame of Debian package descriptions.

    Each distinct one-line description once, labelled by its package's section with the
    area prefix dropped (``contrib/games`` → ``games``), in the order of the index.

    Raises
    ------
    FileNotFoundError
        When ``lists_dir`` has no ``*_Packages`` index (run ``apt-get update``) or none
        of them could be read.
    """
    import pandas as pd

    folder = Path(lists_dir)
    indexes = sorted(p for p in folder.glob("*_Packages*") if p.suffix != ".diff_Index")
    if not indexes:
        raise FileNotFoundError(f"no apt Packages index in {folder}: run `apt-get update` "
                                "(as root) to fetch one")
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for index in indexes:
        with contextlib.suppress(OSError, EOFError, lzma.LZMAError, subprocess.CalledProcessError):
            for fields in _stanzas(_read_index(index)):
                text = fields.get("Description", "")
                section = fields.get("Section", "").rpartition("/")[2]
                if len(text) >= 10 and section and text not in seen:
                    seen.add(text)
                    rows.append((text, section, fields.get("Package", "")))
    if not rows:
        raise FileNotFoundError(f"no package description could be read from {folder} "
                                f"({', '.join(p.name for p in indexes)})")
    frame: pd.DataFrame = pd.DataFrame(rows, columns=["text", "label", "package"])
    return frame
