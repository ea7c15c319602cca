/**
 * Per-cell memory badges in the notebook: a quiet line under each executed code cell
 * ("peak +1.2 GiB · kept +310 MiB · 3.4 s · 62 % of limit"), written into the cell's
 * metadata so that a saved notebook keeps it, dimmed once the cell changes, with the
 * notebook's three heaviest cells marked and a live figure while a cell runs. Fed by the
 * kernel's ledger through the server (the model's poll): nothing asks the kernel.
 */

import { Cell, ICodeCellModel } from '@jupyterlab/cells';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';

import {
  ALL_FIGURES,
  BadgeFigure,
  badgeLevel,
  badgeText,
  figuresOf,
  formatDuration,
  heaviest,
  IBadgeFigures,
  ICellLike,
  isStale,
  matchRecords,
  METADATA_KEY,
  readFigures
} from './badges';
import { formatBytes, linePath, pressureClass } from './format';
import { ICell, MemoryModel } from './model';

/** Kernel statuses after which a running cell will never finish. */
const KERNEL_GONE = new Set(['restarting', 'autorestarting', 'dead']);

const BADGE_CLASS = 'jp-Meno-badge';
const SPARK_WIDTH = 60;
const SPARK_HEIGHT = 12;

export interface IBadgeSettings {
  enabled: boolean;
  figures: BadgeFigure[];
  /** Colour a badge from this share of the limit up. */
  colourFrom: number;
}

export const DEFAULT_BADGE_SETTINGS: IBadgeSettings = {
  enabled: true,
  figures: ALL_FIGURES,
  colourFrom: 0.7
};

function sourceOf(cell: Cell): string {
  return cell.model.sharedModel.getSource();
}

function figuresIn(cell: Cell): IBadgeFigures | null {
  return cell.model.type === 'code' ? readFigures(cell.model.getMetadata(METADATA_KEY)) : null;
}

export class CellBadges {
  settings: IBadgeSettings = { ...DEFAULT_BADGE_SETTINGS };
  /** How long the last batch of records took to apply (ms), for the record. */
  lastApplyMs = 0;
  private _tracker: INotebookTracker;
  private _model: MemoryModel;
  /** What each cell's badge shows now: only cells whose line changes are redrawn. */
  private _shown = new WeakMap<Cell, string>();
  private _sparks = new WeakMap<Cell, string>();
  private _watched = new WeakSet<Cell>();
  /** Each cell's heaviest rank (0: none) at the last full redraw; edits do not change it. */
  private _ranks = new WeakMap<Cell, number>();
  /** Cells queued or running, in the order they were scheduled, with when they began. */
  private _running = new Map<Cell, number>();

  constructor(tracker: INotebookTracker, model: MemoryModel) {
    this._tracker = tracker;
    this._model = model;
    model.onChange(() => this.update());
    tracker.widgetAdded.connect((_, panel) => {
      void panel.context.ready.then(() => this.renderAll(panel));
      panel.content.model?.cells.changed.connect(() => this.renderAll(panel));
      panel.sessionContext.statusChanged.connect((_, status) => {
        if (KERNEL_GONE.has(status)) {
          this.kernelGone(panel);
        }
      });
    });
    NotebookActions.executionScheduled.connect((_, args) => {
      this._running.set(args.cell, Date.now());
    });
    NotebookActions.executed.connect((_, args) => {
      this._running.delete(args.cell);
      this._shown.delete(args.cell);
      // Back to its saved line (the new figures follow with the next poll), or none.
      const panel = this._tracker.find(p => p.content.widgets.includes(args.cell));
      if (panel) {
        this.renderAll(panel);
      }
    });
  }

  /** The notebook panel whose kernel is the model's active kernel. */
  private _activePanel(): NotebookPanel | null {
    const current = this._tracker.currentWidget;
    const kernelId = this._model.activeKernelId;
    if (current && kernelId && current.sessionContext.session?.kernel?.id === kernelId) {
      return current;
    }
    return null;
  }

  /** After each poll: apply the ledger's new records, refresh the running cell's line. */
  update(): void {
    const panel = this._activePanel();
    if (!panel) {
      return;
    }
    if (this._model.newCells.length && this.settings.enabled) {
      this.apply(panel, this._model.newCells);
    } else {
      this._renderRunning(panel);
    }
  }

  /** Write the figures of `records` into the cells they belong to, then redraw. */
  apply(panel: NotebookPanel, records: ICell[]): number {
    const started = performance.now();
    const cells = panel.content.widgets;
    const likes: ICellLike[] = cells.map(cell => ({
      id: cell.model.id,
      executionCount:
        cell.model.type === 'code' ? (cell.model as ICodeCellModel).executionCount : null,
      source: sourceOf(cell)
    }));
    const matched = matchRecords(likes, records, index => {
      const saved = figuresIn(cells[index]);
      return saved ? saved.measured_at : null;
    });
    const limit = this._model.limitOf(this._model.active)?.bytes ?? null;
    for (const [index, record] of matched) {
      const cell = cells[index];
      if (cell.model.type !== 'code') {
        continue;
      }
      cell.model.setMetadata(METADATA_KEY, figuresOf(record, likes[index].source, limit));
      this._sparks.set(cell, this._sparkline(record));
      this._shown.delete(cell);
    }
    this.renderAll(panel);
    this.lastApplyMs = performance.now() - started;
    return matched.size;
  }

  /** Redraw every cell whose line changed (all of them cheap to check). */
  renderAll(panel: NotebookPanel): void {
    const cells = panel.content.widgets;
    const figures = cells.map(figuresIn);
    const ranks = new Map<number, number>();
    heaviest(figures).forEach((index, rank) => ranks.set(index, rank + 1));
    cells.forEach((cell, index) => {
      this._watchSource(cell);
      this._ranks.set(cell, ranks.get(index) ?? 0);
      this._render(cell, figures[index], ranks.get(index) ?? 0);
    });
    this._renderRunning(panel);
  }

  /** The index of the notebook's heaviest cell, or -1 when none was measured. */
  heaviestIndex(panel: NotebookPanel): number {
    const top = heaviest(panel.content.widgets.map(figuresIn), 1);
    return top.length ? top[0] : -1;
  }

  private _watchSource(cell: Cell): void {
    if (this._watched.has(cell)) {
      return;
    }
    this._watched.add(cell);
    // An edit may make the figures stale: redraw that cell only (a cheap hash).
    cell.model.contentChanged.connect(() => {
      const figures = figuresIn(cell);
      if (figures) {
        this._render(cell, figures, this._ranks.get(cell) ?? 0);
      }
    });
  }

  private _badgeNode(cell: Cell, create: boolean): HTMLElement | null {
    let node = cell.node.querySelector<HTMLElement>(`:scope > .${BADGE_CLASS}`);
    if (!node && create) {
      node = document.createElement('div');
      node.className = BADGE_CLASS;
    }
    if (node) {
      // Under the input. A cell restored after a reload may get its input wrapper only
      // after the badge was placed at its end: move the badge up once it is there.
      const input = cell.node.querySelector(':scope > .jp-Cell-inputWrapper');
      if (input && input.nextElementSibling !== node) {
        input.after(node);
      } else if (!input && !node.isConnected) {
        cell.node.append(node);
        void cell.ready.then(() => this._badgeNode(cell, false));
      }
    }
    return node;
  }

  private _render(cell: Cell, figures: IBadgeFigures | null, rank: number): void {
    if (!figures || !this.settings.enabled || this._running.has(cell)) {
      if (!this._running.has(cell)) {
        this._badgeNode(cell, false)?.remove();
        this._shown.delete(cell);
      }
      return;
    }
    const stale = isStale(figures, sourceOf(cell));
    const thresholds = this._model.limit?.thresholds; // the server's: one source
    const level = thresholds ? badgeLevel(figures, thresholds, this.settings.colourFrom) : null;
    const text = badgeText(figures, this.settings.figures);
    const key = `${text}|${stale}|${rank}|${level}|${this._sparks.get(cell) ?? ''}`;
    if (this._shown.get(cell) === key && this._badgeNode(cell, false)) {
      return;
    }
    this._shown.set(cell, key);
    const node = this._badgeNode(cell, true) as HTMLElement;
    node.className = `${BADGE_CLASS} ${level ? pressureClass(level) : ''}`.trim();
    node.classList.toggle('jp-Meno-badge-stale', stale);
    node.classList.toggle('jp-Meno-badge-heavy', rank > 0);
    node.dataset.rank = `${rank}`;
    const label = document.createElement('span');
    label.className = 'jp-Meno-badge-text';
    label.textContent = (rank > 0 ? `▲ heaviest #${rank} · ` : '') + text;
    node.replaceChildren(label);
    const spark = this._sparks.get(cell);
    if (spark) {
      const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
      svg.setAttribute('class', 'jp-Meno-badge-spark');
      svg.setAttribute('viewBox', `0 0 ${SPARK_WIDTH} ${SPARK_HEIGHT}`);
      const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
      path.setAttribute('d', spark);
      svg.append(path);
      node.append(svg);
    }
    const when = new Date(figures.measured_at * 1000).toLocaleString();
    const count = figures.execution_count === null ? '' : ` as [${figures.execution_count}]`;
    node.title =
      `peak increase ${figures.peak_increase.toLocaleString()} bytes\n` +
      `kept ${figures.delta.toLocaleString()} bytes\n` +
      `peak RSS ${formatBytes(figures.peak_rss)}` +
      (figures.limit_bytes ? ` of a ${formatBytes(figures.limit_bytes)} limit` : '') +
      `\nran ${formatDuration(figures.duration_s)}, measured ${when}${count}` +
      (stale ? '\nthe cell changed since: run it again to measure it' : '');
  }

  /**
   * The kernel died or restarts: its running cell was not measured, and the live line
   * (which would go on with the new kernel's RSS) says so instead.
   */
  kernelGone(panel: NotebookPanel): void {
    for (const [cell, started] of [...this._running]) {
      if (!panel.content.widgets.includes(cell)) {
        continue;
      }
      this._running.delete(cell);
      this._shown.delete(cell);
      if (!this.settings.enabled) {
        continue;
      }
      const node = this._badgeNode(cell, true) as HTMLElement;
      node.className = `${BADGE_CLASS} jp-Meno-badge-stopped`;
      node.textContent =
        `the kernel stopped after ${formatDuration((Date.now() - started) / 1000)}: ` +
        'not measured';
      node.title = 'the kernel died or restarted while this cell ran';
    }
  }

  /** The running cell's line: live RSS from the server's sampler, while the kernel works. */
  private _renderRunning(panel: NotebookPanel): void {
    // The model samples the active notebook's kernel only.
    const active = this._activePanel() === panel ? this._model.active : null;
    const running = [...this._running.keys()].find(cell =>
      panel.content.widgets.includes(cell)
    );
    if (!running || !this.settings.enabled) {
      return;
    }
    const started = this._running.get(running) ?? Date.now();
    const node = this._badgeNode(running, true) as HTMLElement;
    node.className = `${BADGE_CLASS} jp-Meno-badge-running`;
    const seconds = (Date.now() - started) / 1000;
    node.textContent =
      `running ${formatDuration(seconds)}` +
      (active && active.rss !== null ? ` · RSS ${formatBytes(active.rss)}` : '');
    node.title = 'live: the kernel process as the server samples it';
    this._shown.delete(running);
  }

  /** A tiny RSS line over the record's run, when the sampled history covers it. */
  private _sparkline(record: ICell): string {
    const model = this._model;
    const end = record.started_at + record.duration_s;
    const times: number[] = [];
    const values: number[] = [];
    model.times.forEach((t, i) => {
      if (t >= record.started_at && t <= end) {
        times.push(t);
        values.push(model.rss[i]);
      }
    });
    if (times.length < 3) {
      return '';
    }
    const low = Math.min(...values);
    const top = Math.max(...values) - low || 1;
    return linePath(
      times,
      values.map(v => v - low),
      SPARK_WIDTH,
      SPARK_HEIGHT,
      top
    );
  }

  /** Redraw every open notebook (after a settings change). */
  refreshAll(): void {
    this._tracker.forEach(panel => {
      panel.content.widgets.forEach(cell => this._shown.delete(cell));
      this.renderAll(panel);
    });
  }
}
