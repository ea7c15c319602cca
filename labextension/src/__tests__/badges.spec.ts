import {
  badgeLevel,
  badgeText,
  figuresOf,
  formatDuration,
  heaviest,
  ICellLike,
  isStale,
  matchRecords,
  readFigures,
  sourceFingerprint
} from '../badges';
import { ICell } from '../model';

const MIB = 2 ** 20;
const GIB = 2 ** 30;

function record(
  count: number | null,
  startedAt: number,
  cellId: string | null = null,
  peak = 10 * MIB
): ICell {
  return {
    execution_count: count,
    source_head: `cell ${count}`,
    started_at: startedAt,
    duration_s: 3.4,
    peak_increase: peak,
    delta: peak / 2,
    peak_rss: 2 * GIB,
    error: null,
    cell_id: cellId
  };
}

describe('badge figures', () => {
  it('fingerprints sources as the Python side does', () => {
    // The same values as tests/core/test_cellbadges.py
    expect(sourceFingerprint('')).toBe('811c9dc5');
    expect(sourceFingerprint('x = 1')).toBe('41f65c6b');
    expect(sourceFingerprint('é😀')).toBe('44cc4da1');
  });

  it('writes one quiet line with the chosen figures', () => {
    const figures = figuresOf(
      { ...record(3, 100), peak_increase: 1.2 * GIB, delta: 310 * MIB, peak_rss: 2.48 * GIB },
      'x = 1',
      4 * GIB
    );
    expect(badgeText(figures)).toBe('peak +1.2 GiB · kept +310.0 MiB · 3.4 s · 62 % of limit');
    expect(badgeText(figures, ['kept', 'peak'])).toBe('peak +1.2 GiB · kept +310.0 MiB');
    expect(badgeText({ ...figures, limit_bytes: null })).toBe(
      'peak +1.2 GiB · kept +310.0 MiB · 3.4 s'
    );
    expect(formatDuration(0.12)).toBe('120 ms');
    expect(formatDuration(125)).toBe('2 min 05 s');
  });

  it('colours only near the limit', () => {
    const figures = figuresOf(record(1, 1), 'x', 4 * GIB); // peak RSS 2 GiB: 50 %
    expect(badgeLevel(figures, [0.7, 0.85], 0.7)).toBeNull();
    expect(badgeLevel(figures, [0.4, 0.85], 0.4)).toBe('medium');
    expect(badgeLevel({ ...figures, peak_rss: 3.9 * GIB }, [0.7, 0.85], 0.7)).toBe('high');
    expect(badgeLevel({ ...figures, limit_bytes: null }, [0.7, 0.85], 0)).toBeNull();
  });

  it('reads saved figures back and refuses malformed ones', () => {
    const figures = figuresOf(record(1, 1), 'x = 1', null);
    expect(readFigures(JSON.parse(JSON.stringify(figures)))).toEqual(figures);
    expect(readFigures({ ...figures, peak_increase: 'lots' })).toBeNull();
    expect(readFigures({ ...figures, source_fingerprint: 3 })).toBeNull();
    expect(readFigures(null)).toBeNull();
    expect(readFigures('x')).toBeNull();
  });

  it('shows absurd saved figures as nothing', () => {
    const figures = figuresOf(record(1, 1), 'x = 1', 4 * GIB);
    expect(readFigures({ ...figures, peak_rss: 1e301 })).toBeNull(); // "1e301 % of limit"
    expect(readFigures({ ...figures, measured_at: NaN })).toBeNull();
    expect(readFigures({ ...figures, measured_at: 1e15 })).toBeNull(); // year 31 million
    expect(readFigures({ ...figures, duration_s: -5 })).toBeNull();
    expect(readFigures({ ...figures, limit_bytes: 0 })).toBeNull();
    expect(readFigures({ ...figures, limit_bytes: -1 })).toBeNull();
    expect(readFigures({ ...figures, limit_bytes: null })?.limit_bytes).toBeNull();
  });

  it('knows when a cell changed since it was measured', () => {
    const figures = figuresOf(record(1, 1), 'x = 1', null);
    expect(isStale(figures, 'x = 1')).toBe(false);
    expect(isStale(figures, 'x = 2')).toBe(true);
  });
});

describe('matching ledger records to cells', () => {
  const cells: ICellLike[] = [
    { id: 'a', executionCount: 1, source: 'x' },
    { id: 'b', executionCount: 2, source: 'y' },
    { id: 'c', executionCount: null, source: 'z' }
  ];

  it('matches by cell id first, then by execution count', () => {
    const matched = matchRecords(cells, [
      record(7, 10, 'c'), // the id wins over the (different) number
      record(2, 20) // no id: by its number
    ]);
    expect([...matched.keys()].sort()).toEqual([1, 2]);
    expect(matched.get(2)?.started_at).toBe(10);
    expect(matched.get(1)?.started_at).toBe(20);
  });

  it('never guesses for an id that is not in this notebook', () => {
    expect(matchRecords(cells, [record(1, 10, 'elsewhere')]).size).toBe(0);
  });

  it('keeps the newest run and skips runs older than what a cell shows', () => {
    const matched = matchRecords(
      cells,
      [record(1, 30, 'a'), record(1, 10, 'a'), record(2, 5, 'b')],
      index => (index === 1 ? 8 : null)
    );
    expect(matched.get(0)?.started_at).toBe(30);
    expect(matched.has(1)).toBe(false); // b already shows a run from t = 8
  });

  it('replaces figures saved with a clock ahead by the new run', () => {
    const now = 1_000_000;
    const aheadByAnHour = now + 3600;
    const matched = matchRecords(
      cells,
      [record(1, now - 5, 'a')],
      () => aheadByAnHour,
      now
    );
    expect(matched.get(0)?.started_at).toBe(now - 5);
  });

  it('ranks the heaviest cells', () => {
    const f = (mib: number) => figuresOf(record(1, 1, null, mib * MIB), 'x', null);
    expect(heaviest([f(5), null, f(50), f(0), f(20), f(10)])).toEqual([2, 4, 5]);
    expect(heaviest([null, f(0), f(0.01)])).toEqual([]); // a few KiB is not "heavy"
  });

  it('applies 500 records to a 500-cell notebook at once', () => {
    const many: ICellLike[] = [];
    const records: ICell[] = [];
    for (let i = 0; i < 500; i++) {
      many.push({ id: `cell-${i}`, executionCount: i + 1, source: `x${i} = ${i}` });
      records.push(record(i + 1, 1000 + i, i % 2 ? `cell-${i}` : null));
    }
    const started = performance.now();
    const matched = matchRecords(many, records);
    const figures = [...matched.entries()].map(([index, rec]) =>
      badgeText(figuresOf(rec, many[index].source, 8 * GIB))
    );
    const top = heaviest([...matched.values()].map(rec => figuresOf(rec, '', null)));
    const elapsed = performance.now() - started;
    expect(matched.size).toBe(500);
    expect(figures[0]).toContain('peak +10.0 MiB');
    expect(top.length).toBe(3);
    // The figure for the issue note (not a timed assertion; benches hold targets).
    console.log(`matched and formatted 500 records in ${elapsed.toFixed(1)} ms`);
  });
});
