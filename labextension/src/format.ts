/**
 * Pure helpers: byte formatting, pressure levels and colours, crossing detection.
 * No JupyterLab imports, so jest tests them directly.
 */

export type Pressure = 'low' | 'medium' | 'high';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** A byte count in binary units, the next unit taken from `nextFrom` of a unit up. */
function inUnits(bytes: number, nextFrom: number): [number, number] {
  let value = bytes;
  let unit = 0;
  while (value >= nextFrom && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return [value, unit];
}

/** Format a byte count the way the Python side does: "1.5 GiB", "512 B". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) {
    return '–';
  }
  const sign = bytes < 0 ? '-' : '';
  const [value, unit] = inUnits(Math.abs(bytes), 1024);
  const text = unit === 0 ? `${value}` : value.toFixed(1);
  return `${sign}${text} ${UNITS[unit]}`;
}

/**
 * A signed change in at most three digits, for a 250 px sidebar's columns: "+30.0 MiB",
 * "+171 MiB", "+0.98 GiB" (from 1,000 of a unit up, the next unit), "+0 B".
 */
export function formatDeltaShort(bytes: number): string {
  const sign = bytes < 0 ? '-' : '+';
  const [value, unit] = inUnits(Math.abs(bytes), 1000);
  let text: string;
  if (unit === 0) {
    text = `${value}`;
  } else if (value >= 100) {
    text = value.toFixed(0);
  } else if (value >= 1) {
    text = value.toFixed(1);
  } else {
    text = value.toFixed(2);
  }
  return `${sign}${text} ${UNITS[unit]}`;
}

/** Format a signed change: "+12.0 MiB", "-3.0 KiB", "+0 B". */
export function formatDelta(bytes: number): string {
  return bytes >= 0 ? `+${formatBytes(bytes)}` : formatBytes(bytes);
}

/**
 * The pressure level of `total` against `limit` with the (medium, high) shares. The shares
 * are the server's (`limit.thresholds` of GET /meno-jupyter/kernels): one source.
 */
export function pressureOf(
  total: number,
  limit: number,
  thresholds: [number, number]
): Pressure {
  if (limit <= 0) {
    return 'low';
  }
  const share = total / limit;
  if (share >= thresholds[1]) {
    return 'high';
  }
  return share >= thresholds[0] ? 'medium' : 'low';
}

/** CSS class for a pressure level. */
export function pressureClass(level: Pressure | null | undefined): string {
  return `jp-Meno-pressure-${level ?? 'unknown'}`;
}

/** The notification text for a kernel that crossed into high pressure. */
export function highPressureMessage(
  kernelName: string,
  percent: number,
  limitBytes: number
): string {
  return `kernel ${kernelName} is at ${Math.round(percent)} % of the ${formatBytes(
    limitBytes
  )} limit`;
}

/**
 * Remember each kernel's last pressure level; say when one crosses into `high`.
 * Once per crossing: it must drop below `high` before it is reported again.
 */
export class CrossingWatcher {
  private _levels = new Map<string, Pressure>();

  /** Record `level` for `kernelId`; return true when it has just become high. */
  update(kernelId: string, level: Pressure | null): boolean {
    const previous = this._levels.get(kernelId);
    if (level === null) {
      return false;
    }
    this._levels.set(kernelId, level);
    return level === 'high' && previous !== 'high';
  }

  /** Forget kernels that are gone. */
  retain(kernelIds: Iterable<string>): void {
    const keep = new Set(kernelIds);
    for (const id of Array.from(this._levels.keys())) {
      if (!keep.has(id)) {
        this._levels.delete(id);
      }
    }
  }
}

/** The first line of a notebook path's file name, for labels. */
export function shortPath(path: string): string {
  const parts = path.split('/');
  return parts[parts.length - 1] || path;
}

/**
 * An SVG path for a series scaled into a `width` x `height` box, or '' when empty.
 * Times on x (oldest left), values on y (0 at the bottom, `top` at the top).
 */
export function linePath(
  times: number[],
  values: number[],
  width: number,
  height: number,
  top: number
): string {
  if (times.length === 0 || top <= 0) {
    return '';
  }
  const t0 = times[0];
  const span = Math.max(times[times.length - 1] - t0, 1e-9);
  const points = times.map((t, i) => {
    const x = ((t - t0) / span) * width;
    const y = height - (Math.min(values[i], top) / top) * height;
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  return `M${points.join('L')}`;
}

/**
 * A round top for a chart's y axis at or above `peak`: 1, 2 or 5 times a power of two
 * of MiB (or of KiB below 1 MiB), so that its label reads "256 MiB", "1.0 GiB".
 */
export function niceTop(peak: number): number {
  if (!(peak > 0)) {
    return 1024 * 1024;
  }
  const base = peak < 1024 * 1024 ? 1024 : 1024 * 1024;
  let power = base;
  while (power * 2 < peak) {
    power *= 2;
  }
  for (const factor of [1, 1.25, 1.5, 2]) {
    if (power * factor >= peak) {
      return power * factor;
    }
  }
  return power * 2;
}

export interface IChartMark {
  /** Where the cell started, 0 (left) to `width` (right). */
  x: number;
  executionCount: number;
  title: string;
}

/**
 * Markers for the cells that started inside the chart's time window, left to right;
 * cells without a number are left out.
 */
export function cellMarks(
  times: number[],
  cells: {
    execution_count: number | null;
    started_at: number;
    source_head: string;
    peak_increase: number;
  }[],
  width: number
): IChartMark[] {
  if (times.length < 2) {
    return [];
  }
  const t0 = times[0];
  const t1 = times[times.length - 1];
  const span = Math.max(t1 - t0, 1e-9);
  return cells
    .filter(
      cell =>
        cell.execution_count !== null && cell.started_at >= t0 && cell.started_at <= t1
    )
    .sort((a, b) => a.started_at - b.started_at)
    .map(cell => ({
      x: ((cell.started_at - t0) / span) * width,
      executionCount: cell.execution_count as number,
      title: `[${cell.execution_count}] ${cell.source_head} · peak ${formatDelta(
        cell.peak_increase
      )}`
    }));
}
