"""A small real corpus this machine has without a network: docstrings, labelled by package."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

PACKAGES = ("json", "email", "http", "xml", "logging", "unittest", "asyncio", "sqlite3",
            "urllib", "concurrent")


def docstring_corpus(per_package: int = 40, packages: tuple[str, ...] = PACKAGES
                     ) -> tuple[list[str], list[str]]:
    """Return (texts, labels): first paragraphs of public docstrings, per stdlib package."""
    texts: list[str] = []
    labels: list[str] = []
    seen: set[str] = set()
    for package in packages:
        found: list[str] = []
        root = importlib.import_module(package)
        modules = pkgutil.walk_packages(getattr(root, "__path__", []), prefix=f"{package}.")
        names = [package, *sorted(m.name for m in modules
                                  if ".test" not in m.name and not m.name.endswith("__main__"))]
        for name in names:
            try:
                module = importlib.import_module(name)
            except Exception:
                continue
            for attr, value in sorted(vars(module).items()):
                if attr.startswith("_") or getattr(value, "__module__", None) != name:
                    continue
                doc = inspect.getdoc(value) or ""
                head = doc.split("\n\n")[0].replace("\n", " ").strip()
                if len(head) >= 30 and head not in seen:
                    seen.add(head)
                    found.append(head[:300])
        for text in found[:per_package]:
            texts.append(text)
            labels.append(package)
    return texts, labels
