"""One way for every result to render: text for terminals, HTML for notebooks."""

from __future__ import annotations

from typing import Any, ClassVar


class RendersAsTable:
    """Mixin: ``str()`` and ``_repr_mimebundle_`` from ``meno_jupyter.display.tables``.

    A class sets ``_render_as = "name"``; ``tables.name_text`` and ``tables.name_html`` draw
    it. The display module is imported only when something is shown.
    """

    _render_as: ClassVar[str]

    def _renderer(self, kind: str) -> Any:
        from meno_jupyter.display import tables

        return getattr(tables, f"{self._render_as}_{kind}")

    def __str__(self) -> str:
        return str(self._renderer("text")(self))

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None, **kwargs: Any
    ) -> dict[str, str]:
        from meno_jupyter.display.tables import mimebundle

        return mimebundle(lambda: self._renderer("text")(self),
                          lambda: self._renderer("html")(self), include, exclude)
