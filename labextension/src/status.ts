/**
 * The status bar item (Notebook 7: the top bar's): the active kernel's RSS against its
 * limit, coloured by pressure.
 */

import { Widget } from '@lumino/widgets';

import { formatBytes, pressureClass } from './format';
import { MemoryModel } from './model';

export class MemoryStatusItem extends Widget {
  private _model: MemoryModel;

  constructor(model: MemoryModel) {
    super();
    this._model = model;
    this.addClass('jp-Meno-status');
    model.onChange(() => this.render());
    this.render();
  }

  render(): void {
    const active = this._model.active;
    const limit = this._model.limitOf(active);
    for (const level of ['low', 'medium', 'high', null] as const) {
      this.node.classList.remove(pressureClass(level));
    }
    if (!active || !limit) {
      this.node.textContent = 'Mem: –';
      this.node.title = this._model.reason;
      return;
    }
    if (!active.measurable || active.total === null) {
      this.node.textContent = 'Mem: n/a';
      this.node.title = active.reason;
      return;
    }
    this.node.classList.add(pressureClass(active.pressure));
    this.node.textContent = `Mem: ${formatBytes(active.total)} / ${formatBytes(
      limit.bytes
    )}`;
    this.node.title = `kernel RSS ${formatBytes(active.rss)} + children ${formatBytes(
      active.children
    )}; limit from ${limit.source}; pressure ${active.pressure}`;
  }
}
