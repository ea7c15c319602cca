"""``MemoryDashboard``: a live ipywidgets view of the kernel's memory.

The timeline is refreshed from the shared :class:`~meno_jupyter.core.live.LiveFeed` on its
own thread, so it keeps moving while a cell runs (as long as that cell's code lets Python
threads run; C code that holds the GIL freezes every in-kernel view, which is what the
JupyterLab sidebar, measuring from the server, is for).
"""

from __future__ import annotations

import atexit
import contextlib
import html
import threading
import weakref
from typing import Any

from meno_jupyter.core.cluster import ClusterHistory, running_client
from meno_jupyter.core.ledger import CellRecord
from meno_jupyter.core.live import (
    LiveFeed,
    LiveSample,
    Subscription,
    shared_feed,
    validate_refresh,
)
from meno_jupyter.core.memory import format_bytes
from meno_jupyter.core.namespace import VariableSize, largest_variables
from meno_jupyter.core.rendering import PRESSURE_COLOURS
from meno_jupyter.core.spill import SpillError
from meno_jupyter.display.figures import live_timeline_spec, svg_timeline
from meno_jupyter.shell import (
    existing_spill_store,
    release_shell_memory,
    session_ledger,
    spill_store,
)

# What the *move to disk* button is offered for (what %memspill can move).
SPILLABLE_TYPES = frozenset({"ndarray", "DataFrame", "Series"})

DEFAULT_INTERVAL_S = 0.5
VARIABLES_TIME_BUDGET_S = 0.5
CHART_WIDTH_PX = 720
FIGURE_WIDGET_HINT = ("the live chart needs plotly's FigureWidget, which needs anywidget and "
                      "its front end: pip install anywidget (then reload the page); "
                      "showing a simple chart instead")

_OPEN: weakref.WeakSet[MemoryDashboard] = weakref.WeakSet()


def open_dashboards() -> list[MemoryDashboard]:
    """Return the dashboards that are open in this process."""
    return [dash for dash in list(_OPEN) if not dash.closed]


def close_all() -> int:
    """Close every open dashboard; return how many were closed."""
    dashboards = open_dashboards()
    for dash in dashboards:
        dash.close()
    return len(dashboards)


atexit.register(close_all)


def _figure_widget(spec: dict[str, Any]) -> Any:
    """Return a plotly FigureWidget for ``spec``; ImportError when the front end lacks it."""
    import plotly.graph_objects as go

    return go.FigureWidget(spec)


class MemoryDashboard:
    """A live memory dashboard: timeline, gauge, largest variables, and actions.

    Parameters
    ----------
    interval_s : float
        Seconds between refreshes (default 0.5, i.e. 2 Hz).
    shell : InteractiveShell, optional
        The IPython shell whose variables are listed (default: the running one).
    feed : LiveFeed, optional
        Where samples come from (default: the process-wide feed all dashboards share).
    top : int
        Variables listed.
    figure_widget : bool
        Use plotly's FigureWidget for the chart; False (or a front end without it) draws
        a plain SVG chart instead.
    dask : "auto", distributed.Client or None
        Also draw the Dask workers (their total and a line each, from the scheduler's
        metrics, polled once a second): ``"auto"`` the client in use when the dashboard
        opens, or this client; None: not.

    Examples
    --------
    ::

        from meno_jupyter import MemoryDashboard
        dash = MemoryDashboard(interval_s=0.25)
        dash            # shows it
        dash.close()    # stops its updates
    """

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        shell: Any = None,
        feed: LiveFeed | None = None,
        top: int = 8,
        figure_widget: bool = True,
        dask: Any = "auto",
    ) -> None:
        import ipywidgets as widgets

        validate_refresh(interval_s)
        if top < 1:
            raise ValueError(f"top must be at least 1, got {top}")
        if shell is None:
            from IPython import get_ipython

            shell = get_ipython()
        self.shell = shell
        self.top = top
        self.feed = feed if feed is not None else shared_feed()
        self.variables: list[VariableSize] = []
        # The frames this dashboard optimized (by id; weak, so a new frame never inherits it).
        self._optimized: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self.pending_delete: str | None = None
        self.message = ""
        self.updates = 0
        self.closed = False
        self.latest: LiveSample | None = None
        self.containers: list[Any] = []  # a sidecar holding the dashboard closes with it
        client = running_client() if isinstance(dask, str) and dask == "auto" else dask
        self.cluster = None if client is None else ClusterHistory(client)
        self._lock = threading.RLock()
        self._widgets = widgets
        self.figure: Any = None
        self.notice = ""
        sample = self.feed.sample()
        spec = self._spec(sample)
        if figure_widget:
            try:
                self.figure = _figure_widget(spec)
            except ImportError:
                self.notice = FIGURE_WIDGET_HINT
        else:
            self.notice = "plain chart (figure_widget=False)"
        self._header = widgets.HTML()
        self._gauge = widgets.FloatProgress(min=0.0, max=100.0, description="of limit",
                                            layout=widgets.Layout(width="98%"))
        self._gauge.add_class("jp-Meno-gauge")
        self._chart = self.figure if self.figure is not None else widgets.HTML()
        self._notice = widgets.HTML(self._notice_html())
        self._variables_box = widgets.VBox()
        self._confirm_text = widgets.HTML()
        confirm_yes = widgets.Button(description="yes, delete", button_style="danger")
        confirm_no = widgets.Button(description="cancel")
        confirm_yes.on_click(lambda _: self.confirm_delete())
        confirm_no.on_click(lambda _: self.cancel_delete())
        self._confirm = widgets.HBox([self._confirm_text, confirm_yes, confirm_no],
                                     layout=widgets.Layout(display="none"))
        free = widgets.Button(description="free memory", icon="recycle",
                              tooltip="Drop IPython's output cache and the last error, "
                                      "collect garbage and trim the heap (%memclean)")
        refresh = widgets.Button(description="refresh variables", icon="refresh")
        close = widgets.Button(description="close", icon="times")
        free.on_click(lambda _: self.free_memory())
        refresh.on_click(lambda _: self.refresh_variables())
        close.on_click(lambda _: self.close())
        self._message = widgets.HTML()
        self.widget = widgets.VBox(
            [self._header, self._gauge, self._chart, self._notice,
             widgets.HTML("<b>largest variables</b>"), self._variables_box, self._confirm,
             widgets.HBox([free, refresh, close]), self._message],
            # As wide as the chart, so that the gauge and the rows line up with it.
            layout=widgets.Layout(border="1px solid var(--jp-border-color2, #ddd)", padding="6px",
                                  width=f"{CHART_WIDTH_PX + 16}px", max_width="100%"),
        )
        self.widget.add_class("jp-Meno-dashboard")
        self.update(sample)
        self.refresh_variables()
        if shell is not None:
            shell.events.register("post_run_cell", self._after_cell)
        self._subscription: Subscription | None = self.feed.subscribe(self.update, interval_s)
        _OPEN.add(self)

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _notice_html(self) -> str:
        if not self.notice:
            return ""
        return f'<span style="color:#ef6c00">{html.escape(self.notice)}</span>'

    def _records(self) -> list[CellRecord]:
        ledger = session_ledger()
        return list(ledger) if ledger is not None else []

    def _series(self, sample: LiveSample) -> tuple[list[float], list[int]]:
        times, values = self.feed.series()
        if not times or times[-1] < sample.timestamp:  # a sample the feed did not keep
            times.append(sample.timestamp)
            values.append(sample.rss_bytes)
        return times, values

    def _spec(self, sample: LiveSample) -> dict[str, Any]:
        times, values = self._series(sample)
        return live_timeline_spec(times, values, sample, self._records(),
                                  thresholds=self.feed.thresholds, width=CHART_WIDTH_PX,
                                  cluster=self.cluster)

    def _cluster_html(self, sample: LiveSample) -> str:
        if self.cluster is None:
            return ""
        workers = self.cluster.poll(sample.timestamp)
        if self.cluster.error is not None:
            return f' · <span style="color:#ef6c00">{html.escape(self.cluster.error)}</span>'
        total = sum(worker.rss_bytes for worker in workers)
        limits = [worker.memory_limit for worker in workers]
        of = (f" of {format_bytes(sum(limit or 0 for limit in limits))}"
              if workers and all(limits) else "")
        return f" · {len(workers)} Dask workers {format_bytes(total)}{of}"

    # ------------------------------------------------------------------ refresh

    def update(self, sample: LiveSample) -> None:
        """Redraw header, gauge and timeline from ``sample`` (runs on the feed's thread)."""
        with self._lock:
            if self.closed:
                return
            self.latest = sample
            colour = PRESSURE_COLOURS[sample.pressure]
            limit = sample.limit
            children = (f" · children {format_bytes(sample.children_bytes)}"
                        if sample.children_bytes else "")
            self._header.value = (
                f'<div class="jp-Meno-dashboard-header"><b>RSS {format_bytes(sample.rss_bytes)}'
                f"</b>{children} · limit {format_bytes(limit.limit_bytes)} ({limit.source})"
                f' · pressure <b style="color:{colour}">{sample.pressure}</b>'
                f"{self._cluster_html(sample)}</div>"
            )
            self._gauge.value = min(100.0, sample.percent)
            self._gauge.style.bar_color = colour
            self._gauge.description = f"{sample.percent:.0f}% of limit"
            if self.figure is not None:
                self._apply(self._spec(sample))
            else:
                self._chart.value = svg_timeline(*self._series(sample), colour)
            self.updates += 1

    def _apply(self, spec: dict[str, Any]) -> None:
        figure = self.figure
        if len(figure.data) != len(spec["data"]):  # a worker joined or left: lines anew
            figure.data = ()
            figure.add_traces(spec["data"])
        with figure.batch_update():
            for trace, new in zip(figure.data, spec["data"], strict=True):
                trace.update(new)
            layout = spec["layout"]
            figure.layout.showlegend = layout["showlegend"]
            figure.layout.shapes = layout["shapes"]
            figure.layout.annotations = layout["annotations"]
            figure.layout.xaxis.range = layout["xaxis"]["range"]
            figure.layout.yaxis.range = layout["yaxis"]["range"]

    def refresh_variables(self) -> list[VariableSize]:
        """List the largest variables again (after every cell, and on the button)."""
        if self.shell is None or self.closed:
            return self.variables
        hidden = getattr(self.shell, "user_ns_hidden", {})
        # meno-jupyter's own objects (this dashboard, results) are not the user's data.
        theirs = {name: value for name, value in self.shell.user_ns.items()
                  if not type(value).__module__.startswith("meno_jupyter.")}
        self.variables = largest_variables(theirs, top=self.top, hidden=hidden,
                                           time_budget_s=VARIABLES_TIME_BUDGET_S)
        old_rows = self._variables_box.children
        rows = [self._row(v) for v in self.variables]
        self._variables_box.children = rows or [self._widgets.HTML(
            "<i>none yet: variables appear here as cells define them</i>")]
        for row in old_rows:  # a widget lives until closed: close what is replaced
            self._close_tree(row)
        return self.variables

    def _row(self, variable: VariableSize) -> Any:
        widgets = self._widgets
        store = existing_spill_store(self.shell) if self.shell is not None else None
        on_disk = store is not None and variable.name in store.spilled_names()
        label = widgets.HTML(
            f"<code>{html.escape(variable.name)}</code> "
            f"<span style='color:var(--jp-ui-font-color2,#666)'>"
            f"{html.escape(variable.type_name)}</span> "
            f"<b>{format_bytes(variable.size_bytes)}</b>" + (" on disk" if on_disk else ""),
            layout=widgets.Layout(width="55%"))
        buttons = []
        button_width = widgets.Layout(width="96px")
        value = self.shell.user_ns.get(variable.name) if self.shell is not None else None
        if variable.type_name == "DataFrame" and not on_disk and \
                self._optimized.get(id(value)) is not value:
            optimize = widgets.Button(description="optimize", icon="compress",
                                      tooltip=f"shrink dtypes of {variable.name}, losslessly",
                                      layout=button_width)
            optimize.on_click(lambda _, name=variable.name: self.optimize(name))
            buttons.append(optimize)
        else:  # the same column of buttons on every row
            buttons.append(widgets.Label("", layout=button_width))
        if variable.type_name in SPILLABLE_TYPES and not on_disk:
            spill = widgets.Button(description="move to disk", icon="hdd-o",
                                   tooltip=f"keep {variable.name} in a file, its memory freed "
                                           "(%memspill)", layout=button_width)
            spill.on_click(lambda _, name=variable.name: self.spill(name))
            buttons.append(spill)
        else:
            buttons.append(widgets.Label("", layout=button_width))
        delete = widgets.Button(description="delete", icon="trash",
                                tooltip=f"del {variable.name} (asks first)",
                                layout=button_width)
        delete.on_click(lambda _, name=variable.name: self.request_delete(name))
        buttons.append(delete)
        return widgets.HBox([label, *buttons])

    def _after_cell(self, result: object) -> None:
        self.refresh_variables()

    def _say(self, text: str) -> None:
        self.message = text
        self._message.value = f"<span>{html.escape(text)}</span>"

    # ------------------------------------------------------------------ actions

    def _user_value(self, name: str) -> object:
        if self.shell is None or name not in self.shell.user_ns:
            raise KeyError(f"no variable named {name!r} any more")
        return self.shell.user_ns[name]

    def optimize(self, name: str) -> str:
        """Shrink DataFrame ``name`` losslessly and rebind the name to the smaller frame."""
        import pandas as pd

        from meno_jupyter.core.dataframe import optimize_dataframe

        try:
            frame = self._user_value(name)
        except KeyError as error:
            self._say(str(error.args[0]))
            return self.message
        if not isinstance(frame, pd.DataFrame):
            self._say(f"{name} is a {type(frame).__name__}, not a DataFrame: nothing changed")
            return self.message
        result = optimize_dataframe(frame)
        self.shell.user_ns[name] = result.frame
        self._optimized[id(result.frame)] = result.frame  # offered no more
        del frame
        self._say(f"{name}: {format_bytes(result.bytes_before)} → "
                  f"{format_bytes(result.bytes_after)} ({100 * result.reduction:.0f}% "
                  "smaller, every value kept)")
        self.refresh_variables()
        return self.message

    def spill(self, name: str) -> str:
        """Move ``name`` to disk (as ``%memspill`` does); say what it freed or why not."""
        if self.shell is None or name not in self.shell.user_ns:
            self._say(f"no variable named {name!r} any more: nothing moved")
            return self.message
        try:
            report = spill_store(self.shell).spill([name], self.shell.user_ns,
                                                   out=self.shell.user_ns.get("Out"))
        except (SpillError, OSError) as error:
            self._say(f"{name} stays in memory: {error}")
            return self.message
        moved = report.moved[0]
        self._say(f"{name} moved to disk ({format_bytes(moved.disk_bytes)}): "
                  f"{format_bytes(moved.freed_bytes)} of memory freed")
        self.refresh_variables()
        return self.message

    def request_delete(self, name: str) -> None:
        """Ask to confirm deleting ``name``; nothing is deleted until :meth:`confirm_delete`."""
        size = next((v.size_bytes for v in self.variables if v.name == name), None)
        held = f" ({format_bytes(size)})" if size is not None else ""
        self.pending_delete = name
        self._confirm_text.value = f"delete <code>{html.escape(name)}</code>{held}?"
        self._confirm.layout.display = "flex"

    def cancel_delete(self) -> None:
        """Forget the pending delete."""
        self.pending_delete = None
        self._confirm.layout.display = "none"

    def confirm_delete(self) -> str:
        """Delete the variable asked for, collect garbage and trim; say what RSS did."""
        name = self.pending_delete
        self.cancel_delete()
        if name is None:
            return self.message
        if self.shell is None or name not in self.shell.user_ns:
            self._say(f"no variable named {name!r} any more: nothing deleted")
            return self.message
        report = release_shell_memory(self.shell, min_size=2**62, delete=[name])
        self._say(f"deleted {name}: RSS {format_bytes(report.rss_before)} → "
                  f"{format_bytes(report.rss_after)}")
        self.refresh_variables()
        return self.message

    def free_memory(self) -> str:
        """Run ``%memclean``'s logic: drop cached outputs and the last error, collect, trim."""
        if self.shell is None:
            self._say("no IPython shell: nothing to free")
            return self.message
        report = release_shell_memory(self.shell)
        self._say(f"freed {format_bytes(report.freed_bytes)}: dropped "
                  f"{len(report.released)} cached outputs/errors, RSS "
                  f"{format_bytes(report.rss_before)} → {format_bytes(report.rss_after)}")
        self.refresh_variables()
        return self.message

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Stop updating, unhook from the shell and close the widgets."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if self.shell is not None:
            with contextlib.suppress(ValueError):
                self.shell.events.unregister("post_run_cell", self._after_cell)
        self._close_widgets()
        for container in self.containers:
            container.close()
        _OPEN.discard(self)

    def _close_widgets(self) -> None:
        self._close_tree(self.widget)

    @staticmethod
    def _close_tree(root: Any) -> None:
        """Close a widget, its children, and their layout and style models."""
        stack = [root]
        while stack:
            widget = stack.pop()
            stack.extend(getattr(widget, "children", ()))
            for part in ("layout", "style"):
                model: Any = getattr(widget, part, None)
                if getattr(model, "comm", None) is not None:
                    model.close()
            widget.close()
