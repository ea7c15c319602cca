/**
 * The Memory panel's state, polled from the server extension. No JupyterLab imports:
 * the fetcher is injected, so jest drives it with canned replies.
 */

import { CrossingWatcher, Pressure } from './format';

export interface IKernelEntry {
  id: string;
  name: string;
  pid: number | null;
  path: string;
  execution_state: string;
  measurable: boolean;
  reason: string;
  rss: number | null;
  children: number | null;
  total: number | null;
  percent: number | null;
  pressure: Pressure | null;
  /** The kernel's memory guard (%memguard), or null when it never said. */
  guard: IGuard | null;
  /** The limit this kernel meets first: its own cgroup's when tighter than the server's. */
  limit_bytes?: number | null;
  limit_source?: string | null;
}

/** A limit in bytes and where it comes from ("cgroup v2", "cgroup of the kernel"…). */
export interface IKernelLimit {
  bytes: number;
  source: string;
}

export interface IGuard {
  on: boolean;
  at: number;
  stops: number;
}

export interface ILimit {
  limit_bytes: number;
  available_bytes: number;
  source: string;
  system_total_bytes: number;
  system_available_bytes: number;
  thresholds: [number, number];
}

export interface IKernelsReply {
  time: number;
  kernels: IKernelEntry[];
  limit: ILimit;
}

export interface IHistoryReply {
  kernel_id: string;
  measurable: boolean;
  reason: string;
  times: number[];
  rss: number[];
  children: number[];
}

export interface ICell {
  execution_count: number | null;
  source_head: string;
  started_at: number;
  duration_s: number;
  peak_increase: number;
  delta: number;
  peak_rss: number;
  error: string | null;
  /** The notebook cell's id (absent from ledgers written before cell ids). */
  cell_id?: string | null;
}

export interface ILedgerReply {
  kernel_id: string;
  available: boolean;
  reason: string;
  cells: ICell[];
}

/** A post-mortem of a kernel that died (GET /meno-jupyter/deaths). */
export interface IDeath {
  id: string;
  kernel_id: string;
  pid: number;
  died_at: number;
  cause: string;
  summary: string;
  exit_code: number | null;
  signal: string | null;
  execution_count: number | null;
  cell_id: string | null;
  source_head: string;
  rss_bytes: number | null;
  peak_rss_bytes: number | null;
  limit_bytes: number | null;
  limit_source: string;
  path: string;
  times: number[];
  rss: number[];
  /** What the kernel's last checkpoint holds ('' or absent: it kept none). */
  checkpoint?: string;
  checkpoint_dir?: string;
}

export interface IDeathsReply {
  time: number;
  deaths: IDeath[];
}

/** Why the panel has no figures to show, or 'ok'. */
export type Availability =
  | 'ok'
  | 'no-kernel'
  | 'not-measurable'
  | 'no-server-extension'
  | 'error'
  | 'loading';

/** GET a path under /meno-jupyter/; rejects with an Error carrying `status`. */
export type Fetcher = (path: string) => Promise<unknown>;

export class FetchError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

export const MAX_POINTS = 3600;
/** Ledger rows kept in the browser (the kernel's file keeps 1,000). */
export const MAX_CELLS = 1000;

export class MemoryModel {
  kernels: IKernelEntry[] = [];
  limit: ILimit | null = null;
  activeKernelId: string | null = null;
  times: number[] = [];
  rss: number[] = [];
  children: number[] = [];
  cells: ICell[] = [];
  /** The ledger records that arrived with the last poll (for the per-cell badges). */
  newCells: ICell[] = [];
  ledgerReason = '';
  /** Whether the kernel is recording cells (its ledger file exists). */
  ledgerAvailable = false;
  availability: Availability = 'no-kernel';
  reason = 'no notebook with a kernel is active';
  updates = 0;
  /** Kernels that have just crossed into high pressure (filled by each poll). */
  crossings: IKernelEntry[] = [];
  /** Post-mortems of kernels that died, newest first. */
  deaths: IDeath[] = [];
  private _deathsSince: number | null = null;

  private _fetch: Fetcher;
  private _listeners: Array<() => void> = [];
  private _watcher = new CrossingWatcher();
  private _generation = 0;

  constructor(fetcher: Fetcher) {
    this._fetch = fetcher;
  }

  /** Call `listener` after every change. */
  onChange(listener: () => void): void {
    this._listeners.push(listener);
  }

  /** The entry of the active kernel, if the server knows it. */
  /** The limit `kernel` meets first: its own cgroup's when tighter, else the shared one. */
  limitOf(kernel: IKernelEntry | null): IKernelLimit | null {
    if (kernel?.limit_bytes) {
      return { bytes: kernel.limit_bytes, source: kernel.limit_source || 'cgroup of the kernel' };
    }
    return this.limit ? { bytes: this.limit.limit_bytes, source: this.limit.source } : null;
  }

  get active(): IKernelEntry | null {
    return this.kernels.find(k => k.id === this.activeKernelId) ?? null;
  }

  /** Switch to another kernel (or none): old figures and in-flight replies are dropped. */
  setActiveKernel(kernelId: string | null): void {
    if (kernelId === this.activeKernelId) {
      return;
    }
    this._generation += 1;
    this.activeKernelId = kernelId;
    this.times = [];
    this.rss = [];
    this.children = [];
    this.cells = [];
    this.newCells = [];
    this.ledgerReason = '';
    this.ledgerAvailable = false;
    if (kernelId === null) {
      this.availability = 'no-kernel';
      this.reason = 'no notebook with a kernel is active';
    } else {
      this.availability = 'loading';
      this.reason = 'waiting for the first sample';
    }
    this._emit();
  }

  /** Fetch kernels, then the active kernel's new samples and ledger. */
  async poll(): Promise<void> {
    const generation = this._generation;
    const kernelId = this.activeKernelId;
    let listing: IKernelsReply;
    try {
      listing = (await this._fetch('kernels')) as IKernelsReply;
    } catch (error) {
      this._fail(error, generation, true);
      return;
    }
    this.kernels = listing.kernels;
    this.limit = listing.limit;
    this.crossings = [];
    for (const kernel of listing.kernels) {
      if (this._watcher.update(kernel.id, kernel.pressure)) {
        this.crossings.push(kernel);
      }
    }
    this._watcher.retain(listing.kernels.map(k => k.id));
    await this._pollDeaths();
    if (kernelId === null) {
      this._emit();
      return;
    }
    const since = this.times.length ? this.times[this.times.length - 1] : 0;
    // Only the ledger's new rows: the cells that started after the last one known.
    const lastCell = this.cells.length
      ? this.cells[this.cells.length - 1].started_at
      : null;
    const ledgerQuery = lastCell === null ? '' : `?since=${lastCell}`;
    let history: IHistoryReply;
    let ledger: ILedgerReply;
    try {
      [history, ledger] = (await Promise.all([
        this._fetch(`kernels/${kernelId}/history?since=${since}`),
        this._fetch(`kernels/${kernelId}/ledger${ledgerQuery}`)
      ])) as [IHistoryReply, ILedgerReply];
    } catch (error) {
      this._fail(error, generation);
      return;
    }
    if (generation !== this._generation || kernelId !== this.activeKernelId) {
      return; // stale: the active kernel changed while we waited
    }
    if (!history.measurable) {
      this.availability = 'not-measurable';
      this.reason = history.reason;
    } else {
      this.times = this.times.concat(history.times).slice(-MAX_POINTS);
      this.rss = this.rss.concat(history.rss).slice(-MAX_POINTS);
      this.children = this.children.concat(history.children).slice(-MAX_POINTS);
      this.availability = this.times.length ? 'ok' : 'loading';
      this.reason = this.times.length ? '' : 'waiting for the first sample';
    }
    // An older server ignores `since`: keep only what is really new.
    const arrived = Array.isArray(ledger?.cells) ? ledger.cells : [];
    this.newCells = arrived.filter(c => lastCell === null || c.started_at > lastCell);
    this.cells = this.cells.concat(this.newCells).slice(-MAX_CELLS);
    this.ledgerAvailable = ledger?.available === true;
    this.ledgerReason = ledger?.available || this.cells.length ? '' : (ledger?.reason ?? '');
    this._emit();
  }

  /** Fetch the post-mortems recorded since the last poll (all of them the first time). */
  private async _pollDeaths(): Promise<void> {
    const query = this._deathsSince === null ? '' : `?since=${this._deathsSince}`;
    let reply: IDeathsReply;
    try {
      reply = (await this._fetch(`deaths${query}`)) as IDeathsReply;
    } catch {
      return; // an older server extension: no post-mortems, nothing else lost
    }
    if (!reply || !Array.isArray(reply.deaths)) {
      return;
    }
    const known = new Set(this.deaths.map(d => d.id));
    const fresh = reply.deaths.filter(d => !known.has(d.id));
    if (fresh.length) {
      this.deaths = fresh.concat(this.deaths).sort((a, b) => b.died_at - a.died_at);
    }
    const newest = this.deaths.length ? this.deaths[0].died_at : null;
    this._deathsSince = newest ?? this._deathsSince;
  }

  private _fail(error: unknown, generation: number, listing = false): void {
    if (generation !== this._generation) {
      return;
    }
    const status = error instanceof FetchError ? error.status : 0;
    if (status === 404 && listing) {
      this.availability = 'no-server-extension';
      this.reason =
        'the meno-jupyter server extension is not running: pip install meno-jupyter, ' +
        'check `jupyter server extension list`, then restart JupyterLab';
    } else if (status === 404) {
      this.availability = 'no-kernel';
      this.reason = 'the kernel is gone (shut down or restarting)';
    } else {
      this.availability = 'error';
      this.reason = `the server did not answer: ${
        error instanceof Error ? error.message : String(error)
      }`;
    }
    this._emit();
  }

  private _emit(): void {
    this.updates += 1;
    for (const listener of this._listeners) {
      listener();
    }
  }
}
