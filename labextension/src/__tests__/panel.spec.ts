import { Widget } from '@lumino/widgets';

import { MemoryModel } from '../model';
import { MemoryPanel } from '../panel';
import { MemoryStatusItem } from '../status';

const LIMIT = {
  limit_bytes: 8 * 2 ** 30,
  available_bytes: 2 ** 30,
  source: 'cgroup v2',
  system_total_bytes: 16 * 2 ** 30,
  system_available_bytes: 2 ** 30,
  thresholds: [0.7, 0.9] as [number, number]
};

function model(): MemoryModel {
  const replies: Record<string, unknown> = {
    kernels: {
      time: 0,
      limit: LIMIT,
      kernels: [
        {
          id: 'k', name: 'python3', pid: 42, path: 'work/a.ipynb', execution_state: 'busy',
          measurable: true, reason: '', rss: 3 * 2 ** 30, children: 2 ** 30, total: 4 * 2 ** 30,
          percent: 50, pressure: 'low', guard: null
        },
        {
          id: 'remote', name: 'python3', pid: null, path: 'b.ipynb', execution_state: 'idle',
          measurable: false, reason: 'not measurable: remote', rss: null, children: null,
          total: null, percent: null, pressure: null, guard: null
        }
      ]
    },
    'kernels/k/history': {
      kernel_id: 'k', measurable: true, reason: '', times: [0, 1, 2],
      rss: [2 ** 30, 2 * 2 ** 30, 3 * 2 ** 30], children: [0, 0, 2 ** 30]
    },
    'kernels/k/ledger': {
      kernel_id: 'k', available: true, reason: '',
      cells: [
        { execution_count: 3, source_head: 'df = load()', started_at: 0, duration_s: 1,
          peak_increase: 2 ** 30, delta: 2 ** 29, peak_rss: 3 * 2 ** 30, error: null },
        { execution_count: 4, source_head: 'boom()', started_at: 1, duration_s: 1,
          peak_increase: 0, delta: 0, peak_rss: 3 * 2 ** 30, error: 'ValueError' }
      ]
    }
  };
  return new MemoryModel(async path => {
    const key = Object.keys(replies)
      .filter(k => path.startsWith(k))
      .sort((a, b) => b.length - a.length)[0];
    return replies[key as string];
  });
}

describe('MemoryPanel', () => {
  it('shows figures, a chart, ledger rows that scroll, and kernels', async () => {
    const state = model();
    const scrolled: number[] = [];
    const panel = new MemoryPanel(state, count => {
      scrolled.push(count);
      return count === 3;
    });
    Widget.attach(panel, document.body);
    state.setActiveKernel('k');
    await state.poll();
    const node = panel.node;
    expect(node.querySelector('.jp-Meno-rss')?.textContent).toBe('3.0 GiB');
    expect(node.querySelector('.jp-Meno-detail')?.textContent).toContain(
      '50 % of the 8.0 GiB limit (cgroup v2)'
    );
    expect(node.querySelector('.jp-Meno-chart-rss')?.getAttribute('d')).toMatch(/^M0\.0,/);
    expect(node.querySelector('.jp-Meno-chart-children')?.getAttribute('d')).not.toBe('');
    // a y scale, the limit labelled, a marker where each recorded cell started
    expect(node.querySelector('.jp-Meno-chart-scale-top')?.textContent).toBe('10.0 GiB');
    expect(node.querySelector('.jp-Meno-chart-scale-mid')?.textContent).toBe('5.0 GiB');
    expect(node.querySelector('.jp-Meno-chart-limit-label')?.textContent).toBe(
      'limit 8.0 GiB'
    );
    const marks = node.querySelectorAll<HTMLElement>('.jp-Meno-chart-mark');
    expect(Array.from(marks).map(m => m.textContent)).toEqual(['[3]', '[4]']);
    expect(marks[1].style.left).toBe('50.0%');
    expect(marks[0].title).toBe('[3] df = load() · peak +1.0 GiB');
    marks[0].click();
    expect(scrolled).toEqual([3]);
    scrolled.length = 0;
    const rows = node.querySelectorAll<HTMLElement>('.jp-Meno-ledger-row');
    expect(rows.length).toBe(2);
    expect(rows[0].textContent).toContain('boom()'); // newest first
    expect(rows[0].classList.contains('jp-Meno-ledger-error')).toBe(true);
    rows[1].click();
    expect(scrolled).toEqual([3]);
    rows[0].click();
    expect(node.querySelector('.jp-Meno-note')?.textContent).toBe(
      'cell [4] is not in the open notebook'
    );
    const kernels = node.querySelectorAll('.jp-Meno-kernel-row');
    expect(kernels[0].textContent).toBe('a.ipynb4.0 GiB');
    expect(kernels[1].textContent).toBe('b.ipynbnot measurable');
    Widget.detach(panel);
  });

  it('shows the memory guard, and turns it on from a button', async () => {
    const state = model();
    const started: string[] = [];
    const panel = new MemoryPanel(state, () => true, id => started.push(id));
    state.setActiveKernel('k');
    await state.poll();
    const guard = panel.node.querySelector('.jp-Meno-guard') as HTMLElement;
    expect(guard.textContent).toContain('memory guard off');
    const button = guard.querySelector('button') as HTMLButtonElement;
    button.click();
    expect(started).toEqual(['k']);
    expect(button.disabled).toBe(true);
    state.kernels[0].guard = { on: true, at: 0.9, stops: 2 };
    panel.render();
    expect(guard.textContent).toBe('memory guard on at 90 % · 2 cells stopped');
    expect(guard.querySelector('button')).toBeNull();
  });

  it('lists the deaths, and goes to the killing cell', async () => {
    const state = model();
    const shown: number[] = [];
    const panel = new MemoryPanel(state, () => true, null, death => {
      shown.push(death.pid);
      return false;
    });
    state.deaths = [
      {
        id: 'k:7:5.000', kernel_id: 'k', pid: 7, died_at: 5, cause: 'crashed: segmentation fault',
        summary: 'The kernel crashed (segmentation fault) while running cell [3].',
        exit_code: -11, signal: 'SIGSEGV', execution_count: 3, cell_id: null, source_head: 'x',
        rss_bytes: null, peak_rss_bytes: null, limit_bytes: null, limit_source: '',
        path: 'work/a.ipynb', times: [], rss: []
      }
    ];
    panel.render();
    const rows = panel.node.querySelectorAll<HTMLElement>('.jp-Meno-death-row');
    expect(rows.length).toBe(1);
    expect(rows[0].textContent).toContain('[3]crashed: segmentation faulta.ipynb');
    rows[0].click();
    expect(shown).toEqual([7]);
    expect(panel.node.textContent).toContain('[3] is not in the open notebook');
  });

  it('offers to watch a kernel that records nothing, until it does', async () => {
    const state = model();
    const watched: string[] = [];
    const panel = new MemoryPanel(state, () => true, null, null, id => watched.push(id));
    state.setActiveKernel('k');
    await state.poll();
    const button = panel.node.querySelector('.jp-Meno-watch-button') as HTMLButtonElement;
    expect(button.style.display).toBe('none'); // the ledger has cells
    state.cells = [];
    state.ledgerAvailable = false;
    state.ledgerReason = 'no cells recorded yet: run %memwatch on';
    panel.render();
    expect(button.style.display).toBe('');
    button.click();
    expect(watched).toEqual(['k']);
    expect(button.textContent).toBe('turning on…');
    state.ledgerAvailable = true; // %memwatch on wrote an empty ledger
    state.ledgerReason = '';
    panel.render();
    expect(button.style.display).toBe('none');
    expect(panel.node.textContent).toContain('recording: each cell run from now is listed');
  });

  it('says why instead of showing blanks', () => {
    const state = model();
    const panel = new MemoryPanel(state, () => true);
    expect(panel.node.querySelector('.jp-Meno-panel-status')?.textContent).toBe(
      'no notebook with a kernel is active'
    );
  });
});

describe('MemoryStatusItem', () => {
  it('shows the active kernel against the limit', async () => {
    const state = model();
    const item = new MemoryStatusItem(state);
    expect(item.node.textContent).toBe('Mem: –');
    state.setActiveKernel('k');
    await state.poll();
    expect(item.node.textContent).toBe('Mem: 4.0 GiB / 8.0 GiB');
    expect(item.node.classList.contains('jp-Meno-pressure-low')).toBe(true);
    state.setActiveKernel('remote');
    await state.poll();
    expect(item.node.textContent).toBe('Mem: n/a');
  });
});
