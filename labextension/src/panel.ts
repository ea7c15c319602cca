/**
 * The "Memory" sidebar panel: the active kernel's figures, a live chart, its per-cell
 * ledger (click a row to scroll to the cell) and every running kernel.
 */

import { Widget } from '@lumino/widgets';

import {
  cellMarks,
  formatBytes,
  formatDelta,
  formatDeltaShort,
  linePath,
  niceTop,
  pressureClass,
  shortPath
} from './format';
import { ICell, IDeath, MemoryModel } from './model';

const CHART_WIDTH = 300;
const CHART_HEIGHT = 120;
const SVG_NS = 'http://www.w3.org/2000/svg';

export type CellScroller = (executionCount: number) => boolean;
/** Turns the memory guard on in a kernel (runs `%memguard on` there). */
export type GuardStarter = (kernelId: string) => void;
/** Goes to (and marks) the cell a dead kernel was running; false if it is not open. */
export type DeathShower = (death: IDeath) => boolean;
/** Starts recording every cell in a kernel (runs `%memwatch on` there). */
export type WatchStarter = (kernelId: string) => void;

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

export class MemoryPanel extends Widget {
  private _model: MemoryModel;
  private _scroll: CellScroller;
  private _heading = element('h3', 'jp-Meno-heading', 'Active kernel');
  private _status = element('div', 'jp-Meno-panel-status');
  private _figures = element('div', 'jp-Meno-panel-figures');
  private _guard = element('div', 'jp-Meno-guard');
  private _startGuard: GuardStarter | null;
  private _chart = document.createElementNS(SVG_NS, 'svg');
  private _rssLine = document.createElementNS(SVG_NS, 'path');
  private _childrenLine = document.createElementNS(SVG_NS, 'path');
  private _limitLine = document.createElementNS(SVG_NS, 'line');
  private _gridLine = document.createElementNS(SVG_NS, 'line');
  private _markLines = document.createElementNS(SVG_NS, 'g');
  private _chartBox = element('div', 'jp-Meno-chart-box');
  private _scaleTop = element('span', 'jp-Meno-chart-scale jp-Meno-chart-scale-top');
  private _scaleMid = element('span', 'jp-Meno-chart-scale jp-Meno-chart-scale-mid');
  private _limitLabel = element('span', 'jp-Meno-chart-limit-label');
  private _markLabels = element('div', 'jp-Meno-chart-marks');
  private _chartLabel = element('div', 'jp-Meno-chart-label');
  private _ledger = element('table', 'jp-Meno-ledger');
  private _ledgerNote = element('div', 'jp-Meno-note');
  private _watchButton = element(
    'button',
    'jp-Meno-watch-button jp-mod-styled',
    'Watch this kernel'
  );
  private _startWatch: WatchStarter | null;
  private _kernels = element('table', 'jp-Meno-kernels');
  private _deaths = element('table', 'jp-Meno-deaths');
  private _deathsNote = element('div', 'jp-Meno-note');
  private _showDeath: DeathShower | null;

  constructor(
    model: MemoryModel,
    scroll: CellScroller,
    startGuard: GuardStarter | null = null,
    showDeath: DeathShower | null = null,
    startWatch: WatchStarter | null = null
  ) {
    super();
    this._startWatch = startWatch;
    this._watchButton.title =
      'Run %memwatch on in this kernel: every cell is recorded, with its figures ' +
      'under the cell and in the notebook file';
    this._watchButton.addEventListener('click', () => {
      const active = this._model.active;
      if (active && this._startWatch) {
        this._watchButton.disabled = true;
        this._watchButton.textContent = 'turning on…';
        this._startWatch(active.id);
      }
    });
    this._model = model;
    this._scroll = scroll;
    this._startGuard = startGuard;
    this._showDeath = showDeath;
    this.id = 'jp-Meno-memory-panel';
    this.addClass('jp-Meno-panel');
    this.title.caption = 'Memory (meno-jupyter)';
    this._chart.setAttribute('class', 'jp-Meno-chart');
    this._chart.setAttribute('viewBox', `0 0 ${CHART_WIDTH} ${CHART_HEIGHT}`);
    this._chart.setAttribute('preserveAspectRatio', 'none');
    this._rssLine.setAttribute('class', 'jp-Meno-chart-rss');
    this._childrenLine.setAttribute('class', 'jp-Meno-chart-children');
    this._limitLine.setAttribute('class', 'jp-Meno-chart-limit');
    this._gridLine.setAttribute('class', 'jp-Meno-chart-grid');
    this._gridLine.setAttribute('x1', '0');
    this._gridLine.setAttribute('x2', `${CHART_WIDTH}`);
    this._gridLine.setAttribute('y1', `${CHART_HEIGHT / 2}`);
    this._gridLine.setAttribute('y2', `${CHART_HEIGHT / 2}`);
    this._chart.append(
      this._gridLine,
      this._markLines,
      this._limitLine,
      this._childrenLine,
      this._rssLine
    );
    this._chartBox.append(
      this._chart,
      this._scaleTop,
      this._scaleMid,
      this._limitLabel,
      this._markLabels
    );
    const node = this.node;
    node.append(
      this._heading,
      this._status,
      this._figures,
      this._guard,
      this._chartBox,
      this._chartLabel,
      element('h3', 'jp-Meno-heading', 'Cells'),
      this._ledgerNote,
      this._watchButton,
      this._ledger,
      element('h3', 'jp-Meno-heading', 'All kernels'),
      this._kernels,
      element('h3', 'jp-Meno-heading', 'Deaths'),
      this._deathsNote,
      this._deaths
    );
    model.onChange(() => this.render());
    this.render();
  }

  /** Redraw from the model. */
  render(): void {
    const model = this._model;
    const active = model.active;
    this._heading.textContent =
      active && active.path ? `Active kernel · ${shortPath(active.path)}` : 'Active kernel';
    this._heading.title = active?.path ?? '';
    this._status.textContent = model.availability === 'ok' ? '' : model.reason;
    this._status.dataset.availability = model.availability;
    this._figures.replaceChildren();
    const limit = model.limitOf(active);
    if (active && active.measurable && active.rss !== null && limit) {
      const level = active.pressure;
      const rss = element('div', `jp-Meno-rss ${pressureClass(level)}`, formatBytes(active.rss));
      rss.title = 'kernel RSS';
      this._figures.append(
        rss,
        element(
          'div',
          'jp-Meno-detail',
          `children ${formatBytes(active.children)} · ${Math.round(
            active.percent ?? 0
          )} % of the ${formatBytes(limit.bytes)} limit (${
            limit.source
          }) · pressure ${level ?? '–'}`
        )
      );
    }
    this._renderGuard();
    this._renderChart();
    this._renderLedger(model.cells);
    this._renderKernels();
    this._renderDeaths();
  }

  private _renderDeaths(): void {
    const deaths = this._model.deaths;
    this._deathsNote.textContent = deaths.length ? '' : 'no kernel has died';
    const rows = deaths.slice(0, 20).map(death => {
      const row = element('tr', 'jp-Meno-death-row');
      row.dataset.deathId = death.id;
      const cell = death.execution_count === null ? '' : `[${death.execution_count}]`;
      const when = new Date(death.died_at * 1000).toLocaleTimeString();
      row.append(
        element('td', '', cell),
        element('td', 'jp-Meno-source', death.cause),
        element('td', 'jp-Meno-note', `${shortPath(death.path) || 'kernel'} · ${when}`)
      );
      row.title = death.summary;
      if (this._showDeath) {
        const show = this._showDeath;
        row.addEventListener('click', () => {
          if (!show(death)) {
            this._deathsNote.textContent = `${cell || 'that cell'} is not in the open notebook`;
          }
        });
      }
      return row;
    });
    this._deaths.replaceChildren(...rows);
  }

  private _renderGuard(): void {
    const active = this._model.active;
    this._guard.replaceChildren();
    if (!active || !active.measurable) {
      return;
    }
    const guard = active.guard;
    if (guard && guard.on) {
      const stops = guard.stops === 1 ? '1 cell stopped' : `${guard.stops} cells stopped`;
      this._guard.append(
        element(
          'span',
          'jp-Meno-guard-on',
          `memory guard on at ${Math.round(guard.at * 100)} % · ${stops}`
        )
      );
      this._guard.title =
        'A cell that would run the kernel out of memory ends in MemoryGuardError; ' +
        'the kernel and its variables survive.';
      return;
    }
    this._guard.title = '';
    this._guard.append(element('span', 'jp-Meno-guard-off', 'memory guard off'));
    if (this._startGuard) {
      const button = element('button', 'jp-Meno-guard-button jp-mod-styled', 'Turn on');
      button.title = 'Run %memguard on in this kernel: a runaway cell then stops with ' +
        'MemoryGuardError instead of the kernel being killed';
      const start = this._startGuard;
      const kernelId = active.id;
      button.addEventListener('click', () => {
        button.disabled = true;
        button.textContent = 'turning on…';
        start(kernelId);
      });
      this._guard.append(button);
    }
  }

  private _renderChart(): void {
    const model = this._model;
    const limit = model.limitOf(model.active)?.bytes ?? 0;
    const totals = model.rss.map((r, i) => r + (model.children[i] ?? 0));
    const peak = Math.max(0, ...totals);
    const limitInView = limit > 0 && limit <= peak * 2.5;
    const top = niceTop(limitInView ? Math.max(limit, peak) * 1.05 : peak * 1.1);
    this._rssLine.setAttribute(
      'd',
      linePath(model.times, model.rss, CHART_WIDTH, CHART_HEIGHT, top)
    );
    this._childrenLine.setAttribute(
      'd',
      model.children.some(c => c > 0)
        ? linePath(model.times, totals, CHART_WIDTH, CHART_HEIGHT, top)
        : ''
    );
    const hasData = model.times.length > 0;
    this._chartBox.dataset.empty = hasData ? 'false' : 'true';
    // The y scale: the top of the axis and its middle (a faint grid line).
    this._scaleTop.textContent = hasData ? formatBytes(top) : '';
    this._scaleMid.textContent = hasData ? formatBytes(top / 2) : '';
    const share = limitInView ? limit / top : 0;
    const y = limitInView ? CHART_HEIGHT - share * CHART_HEIGHT : -10;
    this._limitLine.setAttribute('x1', '0');
    this._limitLine.setAttribute('x2', `${CHART_WIDTH}`);
    this._limitLine.setAttribute('y1', `${y}`);
    this._limitLine.setAttribute('y2', `${y}`);
    this._limitLabel.textContent = limitInView ? `limit ${formatBytes(limit)}` : '';
    this._limitLabel.style.bottom = `${(share * 100).toFixed(1)}%`;
    this._renderMarks();
    const span = hasData ? model.times[model.times.length - 1] - model.times[0] : 0;
    this._chartLabel.textContent = hasData
      ? `last ${Math.round(span)} s · max ${formatBytes(peak)}` +
        (model.children.some(c => c > 0) ? ' · dotted: with children' : '')
      : '';
  }

  /** A thin line and a "[N]" label where each recorded cell started; click to go there. */
  private _renderMarks(): void {
    const model = this._model;
    const marks = cellMarks(model.times, model.cells, CHART_WIDTH).slice(-12);
    const lines = marks.map(mark => {
      const line = document.createElementNS(SVG_NS, 'line');
      line.setAttribute('class', 'jp-Meno-chart-mark-line');
      line.setAttribute('x1', `${mark.x}`);
      line.setAttribute('x2', `${mark.x}`);
      line.setAttribute('y1', '0');
      line.setAttribute('y2', `${CHART_HEIGHT}`);
      return line;
    });
    this._markLines.replaceChildren(...lines);
    const labels = marks.map(mark => {
      const label = element('span', 'jp-Meno-chart-mark', `[${mark.executionCount}]`);
      label.dataset.executionCount = `${mark.executionCount}`;
      label.style.left = `${((mark.x / CHART_WIDTH) * 100).toFixed(1)}%`;
      label.title = mark.title;
      label.addEventListener('click', () => {
        if (!this._scroll(mark.executionCount)) {
          this._ledgerNote.textContent = `cell [${mark.executionCount}] is not in the open notebook`;
        }
      });
      return label;
    });
    this._markLabels.replaceChildren(...labels);
  }

  private _renderLedger(cells: ICell[]): void {
    this._ledgerNote.textContent =
      this._model.ledgerReason ||
      (this._model.ledgerAvailable && cells.length === 0
        ? 'recording: each cell run from now is listed here and shown under it'
        : '');
    // Offered while the kernel records nothing (and it can be asked to).
    const offer =
      this._startWatch !== null &&
      this._model.active?.measurable === true &&
      cells.length === 0 &&
      !this._model.ledgerAvailable &&
      this._model.ledgerReason !== '';
    this._watchButton.style.display = offer ? '' : 'none';
    if (!offer) {
      this._watchButton.disabled = false;
      this._watchButton.textContent = 'Watch this kernel';
    }
    const header = element('tr', '');
    for (const title of ['cell', 'code', 'peak', 'Δ']) {
      header.append(element('th', '', title));
    }
    const rows = cells
      .slice(-50)
      .reverse()
      .map(cell => {
        const row = element('tr', 'jp-Meno-ledger-row');
        const count = cell.execution_count;
        row.append(
          element('td', '', count === null ? '?' : `[${count}]`),
          element('td', 'jp-Meno-source', cell.source_head),
          element('td', '', formatDeltaShort(cell.peak_increase)),
          element('td', '', formatDeltaShort(cell.delta))
        );
        row.title =
          `${cell.source_head}\npeak ${formatDelta(cell.peak_increase)}, ` +
          `kept ${formatDelta(cell.delta)}`;
        if (cell.error) {
          row.classList.add('jp-Meno-ledger-error');
          row.title += `\nraised ${cell.error}`;
        }
        if (count !== null) {
          row.dataset.executionCount = `${count}`;
          row.addEventListener('click', () => {
            if (!this._scroll(count)) {
              this._ledgerNote.textContent = `cell [${count}] is not in the open notebook`;
            }
          });
        }
        return row;
      });
    this._ledger.replaceChildren(header, ...rows);
  }

  private _renderKernels(): void {
    const model = this._model;
    const rows = model.kernels.map(kernel => {
      const row = element('tr', 'jp-Meno-kernel-row');
      if (kernel.id === model.activeKernelId) {
        row.classList.add('jp-Meno-active');
      }
      const name = kernel.path ? shortPath(kernel.path) : kernel.name || kernel.id.slice(0, 8);
      const memory = kernel.measurable
        ? element('td', pressureClass(kernel.pressure), formatBytes(kernel.total))
        : element('td', 'jp-Meno-note', 'not measurable');
      if (!kernel.measurable) {
        memory.title = kernel.reason;
      }
      row.title = `${kernel.path || kernel.id} · pid ${kernel.pid ?? '–'} · ${
        kernel.execution_state
      }`;
      row.append(element('td', '', name), memory);
      return row;
    });
    this._kernels.replaceChildren(...rows);
  }
}
