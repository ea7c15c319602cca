/**
 * Per-cell memory badges, the pure part: the figures saved in a cell's metadata (`meno`),
 * matching ledger records to cells, the one-line text, staleness and the heaviest cells.
 * No JupyterLab imports, so jest tests it directly. The Python side
 * (`meno_jupyter/core/cellbadges.py`) reads the same metadata and fingerprint.
 */

import { formatDelta, Pressure, pressureOf } from './format';
import { ICell } from './model';

export const METADATA_KEY = 'meno';
export const BADGE_SCHEMA_VERSION = 1;

/** What is saved in `cell.metadata.meno`. */
export interface IBadgeFigures {
  schema: number;
  peak_increase: number;
  delta: number;
  peak_rss: number;
  duration_s: number;
  limit_bytes: number | null;
  /** Unix time at which the measured run started. */
  measured_at: number;
  execution_count: number | null;
  /** `sourceFingerprint` of the source that was measured. */
  source_fingerprint: string;
}

/** A figure a badge can show (settings: `badgeFigures`). */
export type BadgeFigure = 'peak' | 'kept' | 'duration' | 'limit';
export const ALL_FIGURES: BadgeFigure[] = ['peak', 'kept', 'duration', 'limit'];

/** What the matching needs to know of a notebook cell. */
export interface ICellLike {
  id: string;
  executionCount: number | null;
  source: string;
}

/**
 * FNV-1a over the UTF-16 code units of `source`, as 8 hex digits (the same as
 * `source_fingerprint` in Python).
 */
export function sourceFingerprint(source: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < source.length; i++) {
    hash ^= source.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

/** The figures to save for a ledger record measured on a cell whose source is `source`. */
export function figuresOf(
  record: ICell,
  source: string,
  limitBytes: number | null
): IBadgeFigures {
  return {
    schema: BADGE_SCHEMA_VERSION,
    peak_increase: record.peak_increase,
    delta: record.delta,
    peak_rss: record.peak_rss,
    duration_s: record.duration_s,
    limit_bytes: limitBytes,
    measured_at: record.started_at,
    execution_count: record.execution_count,
    source_fingerprint: sourceFingerprint(source)
  };
}

/**
 * What a saved figure may claim: [lowest, highest]. A notebook is a file anyone can edit;
 * outside these (1e301 %, a date in the year 40000, a negative duration) it is unreadable
 * and shown as nothing. The Python side (`cellbadges.py`) checks the same bounds.
 */
export const FIGURE_BOUNDS: Record<string, [number, number]> = {
  peak_increase: [-(2 ** 50), 2 ** 50],
  delta: [-(2 ** 50), 2 ** 50],
  peak_rss: [0, 2 ** 50],
  duration_s: [0, 1e7],
  measured_at: [0, 2 ** 33],
  limit_bytes: [1, 2 ** 50]
};

function inBounds(data: Record<string, unknown>, name: string): boolean {
  const value = data[name];
  const [low, high] = FIGURE_BOUNDS[name];
  return typeof value === 'number' && Number.isFinite(value) && value >= low && value <= high;
}

/** Read saved figures back, or null when there are none or they are malformed or absurd. */
export function readFigures(value: unknown): IBadgeFigures | null {
  if (!value || typeof value !== 'object') {
    return null;
  }
  const data = value as Record<string, unknown>;
  const numbers = ['peak_increase', 'delta', 'peak_rss', 'duration_s', 'measured_at'];
  if (!numbers.every(name => inBounds(data, name))) {
    return null;
  }
  if (typeof data.source_fingerprint !== 'string') {
    return null;
  }
  if (data.limit_bytes !== null && data.limit_bytes !== undefined) {
    if (!inBounds(data, 'limit_bytes')) {
      return null;
    }
  }
  const limit = inBounds(data, 'limit_bytes') ? (data.limit_bytes as number) : null;
  const count = Number.isInteger(data.execution_count)
    ? (data.execution_count as number)
    : null;
  return {
    schema: Number.isFinite(data.schema) ? (data.schema as number) : BADGE_SCHEMA_VERSION,
    peak_increase: data.peak_increase as number,
    delta: data.delta as number,
    peak_rss: data.peak_rss as number,
    duration_s: data.duration_s as number,
    limit_bytes: limit,
    measured_at: data.measured_at as number,
    execution_count: count,
    source_fingerprint: data.source_fingerprint
  };
}

/** Whether the cell changed since its figures were measured. */
export function isStale(figures: IBadgeFigures, source: string): boolean {
  return figures.source_fingerprint !== sourceFingerprint(source);
}

/** "3.4 s", "120 ms", "2 min 05 s" (as the Python side writes durations). */
export function formatDuration(seconds: number): string {
  if (seconds < 1) {
    return `${Math.round(seconds * 1000)} ms`;
  }
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const total = Math.round(seconds);
  return `${Math.floor(total / 60)} min ${String(total % 60).padStart(2, '0')} s`;
}

/** The badge's line: "peak +1.2 GiB · kept +310.0 MiB · 3.4 s · 62 % of limit". */
export function badgeText(
  figures: IBadgeFigures,
  shown: BadgeFigure[] = ALL_FIGURES
): string {
  const parts: string[] = [];
  for (const figure of ALL_FIGURES.filter(f => shown.includes(f))) {
    if (figure === 'peak') {
      parts.push(`peak ${formatDelta(figures.peak_increase)}`);
    } else if (figure === 'kept') {
      parts.push(`kept ${formatDelta(figures.delta)}`);
    } else if (figure === 'duration') {
      parts.push(formatDuration(figures.duration_s));
    } else if (figures.limit_bytes) {
      parts.push(`${Math.round((100 * figures.peak_rss) / figures.limit_bytes)} % of limit`);
    }
  }
  return parts.join(' · ');
}

/**
 * The pressure colour of a badge, or null below `colourFrom` (a share of the limit):
 * a quiet line unless the cell took the process near its limit.
 */
export function badgeLevel(
  figures: IBadgeFigures,
  thresholds: [number, number],
  colourFrom: number
): Pressure | null {
  if (!figures.limit_bytes || figures.peak_rss < colourFrom * figures.limit_bytes) {
    return null;
  }
  return pressureOf(figures.peak_rss, figures.limit_bytes, thresholds);
}

/**
 * Which cell each ledger record belongs to: the cell with the record's cell id, else the
 * code cell showing the record's execution count (a front end that sent no id). Records
 * older than the figures a cell already has are skipped; the newest record wins. Saved
 * figures that claim a time after `nowS` (a clock ahead, an edited file) cannot be from this
 * session's past: they never hold a new measurement back.
 * Returns a map from cell index to record.
 */
export function matchRecords(
  cells: ICellLike[],
  records: ICell[],
  savedAt: (index: number) => number | null = () => null,
  nowS: number = Date.now() / 1000
): Map<number, ICell> {
  const byId = new Map<string, number>();
  const byCount = new Map<number, number>();
  cells.forEach((cell, index) => {
    byId.set(cell.id, index);
    if (cell.executionCount !== null) {
      byCount.set(cell.executionCount, index);
    }
  });
  const matched = new Map<number, ICell>();
  for (const record of records) {
    let index: number | undefined = record.cell_id ? byId.get(record.cell_id) : undefined;
    if (index === undefined && !record.cell_id && record.execution_count !== null) {
      index = byCount.get(record.execution_count);
    }
    if (index === undefined) {
      continue;
    }
    const saved = savedAt(index);
    if (saved !== null && saved <= nowS && saved >= record.started_at) {
      continue; // the cell already shows this run or a later one
    }
    const previous = matched.get(index);
    if (!previous || previous.started_at < record.started_at) {
      matched.set(index, record);
    }
  }
  return matched;
}

/** A cell is marked among the heaviest only from this peak increase up (bytes). */
export const HEAVY_MIN_BYTES = 1024 * 1024;

/** The indices of the `n` cells with the largest peak increase (1 MiB or more), largest first. */
export function heaviest(figures: (IBadgeFigures | null)[], n = 3): number[] {
  return figures
    .map((f, index) => ({ index, peak: f ? f.peak_increase : 0 }))
    .filter(entry => entry.peak >= HEAVY_MIN_BYTES)
    .sort((a, b) => b.peak - a.peak)
    .slice(0, n)
    .map(entry => entry.index);
}
