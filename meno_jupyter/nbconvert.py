r"""nbconvert support: the memory line saved under each cell, in converted notebooks.

``jupyter nbconvert --to meno_html analysis.ipynb`` renders HTML with the line
("peak +1.2 GiB · kept +310 MiB · 3.4 s · 62 % of limit") under every measured cell; stale
figures (the cell changed since) are marked. Any other exporter takes the preprocessor::

    jupyter nbconvert --to markdown \
        --Exporter.preprocessors=meno_jupyter.nbconvert.MemoryBadgePreprocessor x.ipynb
"""

from __future__ import annotations

import html
from typing import Any

from nbconvert.exporters import HTMLExporter
from nbconvert.preprocessors import Preprocessor

from meno_jupyter.core.cellbadges import cell_memory

BADGE_STYLE = ("font-size: 0.85em; color: #757575; font-family: var(--jp-ui-font-family, "
               "sans-serif); margin: 2px 0 6px 0;")


class MemoryBadgePreprocessor(Preprocessor):
    """Add the saved memory line as an output under each measured code cell."""

    def preprocess_cell(self, cell: Any, resources: Any, index: int) -> tuple[Any, Any]:
        """Append one display output with the cell's memory line (text and HTML)."""
        if cell.get("cell_type") != "code":
            return cell, resources
        memory = cell_memory(index, cell)
        if memory is None:
            return cell, resources
        text = memory.badge_text()
        if memory.stale:
            text += " (measured before the cell was changed)"
        from nbformat.v4 import new_output

        cell.outputs.append(new_output(
            "display_data",
            data={"text/plain": f"memory: {text}",
                  "text/html": f'<div class="meno-badge" style="{BADGE_STYLE}">'
                               f"memory: {html.escape(text)}</div>"},
            metadata={"meno": {"badge": True}}))
        return cell, resources


class MemoryHTMLExporter(HTMLExporter):
    """HTML with each cell's saved memory line (``--to meno_html``)."""

    export_from_notebook = "HTML with memory"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_preprocessor(MemoryBadgePreprocessor, enabled=True)
