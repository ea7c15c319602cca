import { FetchError, IKernelEntry, MemoryModel } from '../model';

const LIMIT = {
  limit_bytes: 1000,
  available_bytes: 500,
  source: 'test',
  system_total_bytes: 2000,
  system_available_bytes: 1000,
  thresholds: [0.7, 0.9] as [number, number]
};

function kernel(id: string, total: number, pressure: 'low' | 'high'): IKernelEntry {
  return {
    id,
    name: 'python3',
    pid: 1,
    path: `${id}.ipynb`,
    execution_state: 'busy',
    measurable: true,
    reason: '',
    rss: total,
    children: 0,
    total,
    percent: total / 10,
    pressure,
    guard: null
  };
}

type Reply = unknown | (() => Promise<unknown>);

/** A fetcher answering from a table; a function value is called (to delay or fail). */
function fetcher(table: Record<string, Reply>) {
  const asked: string[] = [];
  const fetch = async (path: string): Promise<unknown> => {
    asked.push(path);
    const key = Object.keys(table)
      .filter(k => path.startsWith(k))
      .sort((a, b) => b.length - a.length)[0];
    if (key === undefined) {
      throw new FetchError('404 Not Found', 404);
    }
    const value = table[key];
    return typeof value === 'function' ? (value as () => Promise<unknown>)() : value;
  };
  return { fetch, asked };
}

describe('MemoryModel', () => {
  it('says there is no kernel before one is active', async () => {
    const { fetch } = fetcher({ kernels: { time: 0, kernels: [], limit: LIMIT } });
    const model = new MemoryModel(fetch);
    await model.poll();
    expect(model.availability).toBe('no-kernel');
    expect(model.reason).toContain('no notebook');
  });

  it('appends history and asks only for samples after the last one', async () => {
    const { fetch, asked } = fetcher({
      kernels: { time: 0, kernels: [kernel('k1', 100, 'low')], limit: LIMIT },
      'kernels/k1/history': {
        kernel_id: 'k1', measurable: true, reason: '', times: [1, 2], rss: [10, 20], children: [0, 0]
      },
      'kernels/k1/ledger': { kernel_id: 'k1', available: true, reason: '', cells: [] }
    });
    const model = new MemoryModel(fetch);
    model.setActiveKernel('k1');
    expect(model.availability).toBe('loading');
    await model.poll();
    expect(model.availability).toBe('ok');
    expect(model.rss).toEqual([10, 20]);
    expect(model.active?.total).toBe(100);
    await model.poll();
    expect(asked).toContain('kernels/k1/history?since=2');
    expect(model.rss).toEqual([10, 20, 10, 20]);
  });

  it('fetches only the ledger rows after the last one, and hands on the new ones', async () => {
    const cell = (n: number, startedAt: number) => ({
      execution_count: n, source_head: `x${n}`, started_at: startedAt, duration_s: 1,
      peak_increase: 10, delta: 5, peak_rss: 100, error: null, cell_id: `id-${n}`
    });
    const ledger = { kernel_id: 'k1', available: true, reason: '', cells: [cell(1, 10), cell(2, 20)] };
    const { fetch, asked } = fetcher({
      kernels: { time: 0, kernels: [kernel('k1', 100, 'low')], limit: LIMIT },
      'kernels/k1/history': {
        kernel_id: 'k1', measurable: true, reason: '', times: [], rss: [], children: []
      },
      'kernels/k1/ledger': () => Promise.resolve(ledger)
    });
    const model = new MemoryModel(fetch);
    model.setActiveKernel('k1');
    await model.poll();
    expect(asked).toContain('kernels/k1/ledger');
    expect(model.newCells.map(c => c.execution_count)).toEqual([1, 2]);
    // An older server answers with every row again: nothing is new, nothing doubled.
    ledger.cells = [cell(1, 10), cell(2, 20), cell(3, 30)];
    await model.poll();
    expect(asked).toContain('kernels/k1/ledger?since=20');
    expect(model.newCells.map(c => c.execution_count)).toEqual([3]);
    await model.poll();
    expect(model.newCells).toEqual([]);
    expect(model.cells.map(c => c.execution_count)).toEqual([1, 2, 3]);
  });

  it('drops a reply for a kernel that is no longer active', async () => {
    let release: (value: unknown) => void = () => undefined;
    const slow = new Promise(resolve => {
      release = resolve;
    });
    const { fetch } = fetcher({
      kernels: { time: 0, kernels: [kernel('a', 1, 'low'), kernel('b', 2, 'low')], limit: LIMIT },
      'kernels/a/history': () => slow,
      'kernels/a/ledger': { kernel_id: 'a', available: true, reason: '', cells: [] },
      'kernels/b/history': {
        kernel_id: 'b', measurable: true, reason: '', times: [5], rss: [222], children: [0]
      },
      'kernels/b/ledger': { kernel_id: 'b', available: true, reason: '', cells: [] }
    });
    const model = new MemoryModel(fetch);
    model.setActiveKernel('a');
    const pending = model.poll();
    await new Promise(resolve => setTimeout(resolve, 0));
    model.setActiveKernel('b');
    await model.poll();
    release({ kernel_id: 'a', measurable: true, reason: '', times: [1], rss: [111], children: [0] });
    await pending;
    expect(model.activeKernelId).toBe('b');
    expect(model.rss).toEqual([222]);
  });

  it('says why a remote kernel has no figures', async () => {
    const { fetch } = fetcher({
      kernels: { time: 0, kernels: [], limit: LIMIT },
      'kernels/r/history': {
        kernel_id: 'r', measurable: false, reason: 'not measurable: remote', times: [], rss: [], children: []
      },
      'kernels/r/ledger': { kernel_id: 'r', available: false, reason: 'no cells', cells: [] }
    });
    const model = new MemoryModel(fetch);
    model.setActiveKernel('r');
    await model.poll();
    expect(model.availability).toBe('not-measurable');
    expect(model.reason).toBe('not measurable: remote');
    expect(model.ledgerReason).toBe('no cells');
  });

  it('says when the server extension is missing', async () => {
    const { fetch } = fetcher({});
    const model = new MemoryModel(fetch);
    model.setActiveKernel('x');
    await model.poll();
    expect(model.availability).toBe('no-server-extension');
    expect(model.reason).toContain('jupyter server extension list');
  });

  it('reports each crossing into high pressure once', async () => {
    let level: 'low' | 'high' = 'low';
    const { fetch } = fetcher({
      kernels: () =>
        Promise.resolve({ time: 0, kernels: [kernel('k', level === 'high' ? 950 : 100, level)], limit: LIMIT })
    });
    const model = new MemoryModel(fetch);
    const seen: number[] = [];
    model.onChange(() => seen.push(model.crossings.length));
    await model.poll();
    level = 'high';
    await model.poll();
    await model.poll();
    level = 'low';
    await model.poll();
    level = 'high';
    await model.poll();
    expect(seen).toEqual([0, 1, 0, 0, 1]);
  });

  it("uses a kernel's own cgroup limit when it is tighter than the server's", async () => {
    const tight = { ...kernel('k', 500, 'high'), limit_bytes: 600, limit_source: 'cgroup of the kernel' };
    const { fetch } = fetcher({
      kernels: { time: 0, kernels: [tight, kernel('j', 100, 'low')], limit: LIMIT }
    });
    const model = new MemoryModel(fetch);
    model.setActiveKernel('k');
    await model.poll();
    expect(model.limitOf(model.active)).toEqual({ bytes: 600, source: 'cgroup of the kernel' });
    expect(model.limitOf(model.kernels.find(k => k.id === 'j') ?? null)).toEqual({
      bytes: 1000,
      source: 'test'
    });
    expect(model.limitOf(null)).toEqual({ bytes: 1000, source: 'test' });
  });
});
