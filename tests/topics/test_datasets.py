"""The offline corpora: docstrings by package and Debian package descriptions by section."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from meno_jupyter.topics.datasets import debian_descriptions, docstring_corpus

INDEX = """\
Package: 0ad
Version: 0.0.26-3
Section: games
Description: Real-time strategy game of ancient warfare
Description-md5: d943033bedada21853d2ae54a2578a7b

Package: 0ad-data
Section: games
Description: Real-time strategy game of ancient warfare
Tag: role::app-data

Package: python3-numpy
Section: python
Description: Fast array facility to the Python language (Python 3)

Package: nvidia-driver
Section: non-free/libs
Description: NVIDIA metapackage

Package: nosection
Description: A package without a section is left out
"""


def test_debian_index_parsed_by_section(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "deb_dists_main_binary-amd64_Packages.gz", "wt") as index:
        index.write(INDEX)
    frame = debian_descriptions(tmp_path)
    assert frame["text"].tolist() == ["Real-time strategy game of ancient warfare",
                                      "Fast array facility to the Python language (Python 3)",
                                      "NVIDIA metapackage"]
    assert frame["label"].tolist() == ["games", "python", "libs"]
    assert frame["package"].tolist() == ["0ad", "python3-numpy", "nvidia-driver"]


def test_debian_without_lists_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get update"):
        debian_descriptions(tmp_path)
    (tmp_path / "deb_dists_main_binary-amd64_Packages.xz").write_bytes(b"not xz at all")
    with pytest.raises(FileNotFoundError, match="could be read"):
        debian_descriptions(tmp_path)


def test_docstring_corpus_labels_and_limits() -> None:
    frame = docstring_corpus(["json", "logging"], per_package=5)
    assert set(frame["label"]) == {"json", "logging"}
    assert frame.groupby("label").size().max() <= 5
    assert frame["text"].is_unique and frame["text"].str.len().min() >= 30


def test_docstring_corpus_unknown_package() -> None:
    with pytest.raises(ValueError, match="not an importable package"):
        docstring_corpus(["no_such_package_here"])
