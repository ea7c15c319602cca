"""Copy the tutorials where ``make lab`` opens them, ready for this machine's kernel.

A copy is made once and never overwritten (the user's work stays). Its kernelspec and
``language_info`` are those the kernel will report, so JupyterLab does not mark a
notebook as modified the moment it opens; the tracked notebooks stay generic.

Usage: ``python scripts/lab_notebooks.py SOURCE_DIR TARGET_DIR``
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def kernel_metadata() -> dict[str, dict[str, object]]:
    """Return the kernelspec and language_info that this Python's ipykernel reports."""
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    return {"kernelspec": {"display_name": spec.display_name, "language": spec.language,
                           "name": "python3"},
            "language_info": dict(IPythonKernel.language_info)}


def copy_notebooks(source: Path, target: Path) -> list[Path]:
    """Copy every notebook of ``source`` missing from ``target``; return the new copies."""
    target.mkdir(parents=True, exist_ok=True)
    metadata = kernel_metadata()
    made = []
    for path in sorted(source.glob("*.ipynb")):
        copy = target / path.name
        if copy.exists():
            continue
        notebook = nbformat.read(path, as_version=4)
        notebook.metadata.update(metadata)
        nbformat.write(notebook, copy)
        made.append(copy)
    return made


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    for made in copy_notebooks(Path(sys.argv[1]), Path(sys.argv[2])):
        print(f"copied {made}")
