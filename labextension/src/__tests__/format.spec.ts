import {
  cellMarks,
  CrossingWatcher,
  formatBytes,
  formatDelta,
  formatDeltaShort,
  highPressureMessage,
  linePath,
  niceTop,
  pressureClass,
  pressureOf,
  shortPath
} from '../format';

describe('formatBytes', () => {
  it('uses binary units like the Python side', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(300 * 2 ** 20)).toBe('300.0 MiB');
    expect(formatBytes(8 * 2 ** 30)).toBe('8.0 GiB');
    expect(formatBytes(-2 * 2 ** 20)).toBe('-2.0 MiB');
  });

  it('shows a dash for missing figures', () => {
    expect(formatBytes(null)).toBe('–');
    expect(formatBytes(undefined)).toBe('–');
    expect(formatBytes(NaN)).toBe('–');
  });

  it('signs deltas', () => {
    expect(formatDelta(2 ** 20)).toBe('+1.0 MiB');
    expect(formatDelta(-(2 ** 20))).toBe('-1.0 MiB');
    expect(formatDelta(0)).toBe('+0 B');
  });

  it('keeps sidebar deltas to three digits', () => {
    expect(formatDeltaShort(30 * 2 ** 20)).toBe('+30.0 MiB');
    expect(formatDeltaShort(170.6 * 2 ** 20)).toBe('+171 MiB');
    expect(formatDeltaShort(1023.9 * 2 ** 20)).toBe('+1.00 GiB');
    expect(formatDeltaShort(1000 * 2 ** 20)).toBe('+0.98 GiB');
    expect(formatDeltaShort(-512)).toBe('-512 B');
    expect(formatDeltaShort(0)).toBe('+0 B');
  });
});

describe('pressure', () => {
  it('classifies shares of the limit', () => {
    const server: [number, number] = [0.7, 0.85]; // what the server sends by default
    expect(pressureOf(10, 100, server)).toBe('low');
    expect(pressureOf(70, 100, server)).toBe('medium');
    expect(pressureOf(84, 100, server)).toBe('medium');
    expect(pressureOf(85, 100, server)).toBe('high');
    expect(pressureOf(50, 100, [0.4, 0.5])).toBe('high');
    expect(pressureOf(50, 0, server)).toBe('low');
  });

  it('maps levels to CSS classes', () => {
    expect(pressureClass('high')).toBe('jp-Meno-pressure-high');
    expect(pressureClass(null)).toBe('jp-Meno-pressure-unknown');
  });

  it('words the notification', () => {
    expect(highPressureMessage('X', 91.4, 8 * 2 ** 30)).toBe(
      'kernel X is at 91 % of the 8.0 GiB limit'
    );
  });
});

describe('CrossingWatcher', () => {
  it('reports a kernel once per crossing into high', () => {
    const watcher = new CrossingWatcher();
    expect(watcher.update('a', 'low')).toBe(false);
    expect(watcher.update('a', 'high')).toBe(true);
    expect(watcher.update('a', 'high')).toBe(false);
    expect(watcher.update('a', 'medium')).toBe(false);
    expect(watcher.update('a', 'high')).toBe(true);
  });

  it('reports a kernel first seen at high, and forgets gone kernels', () => {
    const watcher = new CrossingWatcher();
    expect(watcher.update('b', 'high')).toBe(true);
    watcher.retain(['c']);
    expect(watcher.update('b', 'high')).toBe(true);
    expect(watcher.update('c', null)).toBe(false);
  });
});

describe('linePath and shortPath', () => {
  it('scales a series into the box', () => {
    expect(linePath([], [], 100, 50, 10)).toBe('');
    expect(linePath([0, 10], [0, 10], 100, 50, 10)).toBe('M0.0,50.0L100.0,0.0');
    expect(linePath([0, 10], [5, 20], 100, 50, 10)).toBe('M0.0,25.0L100.0,0.0');
  });

  it('keeps the file name of a path', () => {
    expect(shortPath('a/b/c.ipynb')).toBe('c.ipynb');
    expect(shortPath('c.ipynb')).toBe('c.ipynb');
  });
});

describe('chart scale and cell markers', () => {
  const MIB = 2 ** 20;

  it('rounds the top of the axis up to a readable figure', () => {
    expect(niceTop(95.7 * MIB)).toBe(96 * MIB);
    expect(niceTop(130 * MIB)).toBe(160 * MIB);
    expect(niceTop(440 * MIB)).toBe(512 * MIB);
    expect(niceTop(3 * 2 ** 30)).toBe(3 * 2 ** 30);
    expect(niceTop(300 * 1024)).toBe(320 * 1024);
    expect(niceTop(0)).toBe(MIB);
    for (const peak of [2000, 7 * MIB, 999 * MIB, 5e10]) {
      expect(niceTop(peak)).toBeGreaterThanOrEqual(peak);
      expect(niceTop(peak)).toBeLessThan(peak * 2.01);
    }
  });

  it('places the cells that started inside the window', () => {
    const times = [100, 110, 120, 130, 140];
    const cell = (count: number | null, startedAt: number) => ({
      execution_count: count,
      started_at: startedAt,
      source_head: `x = ${count}`,
      peak_increase: MIB
    });
    const marks = cellMarks(
      times,
      [cell(5, 130), cell(2, 90), cell(3, 100), cell(null, 120), cell(4, 141)],
      300
    );
    expect(marks.map(m => m.executionCount)).toEqual([3, 5]);
    expect(marks[0].x).toBe(0);
    expect(marks[1].x).toBeCloseTo(225);
    expect(marks[1].title).toBe('[5] x = 5 · peak +1.0 MiB');
    expect(cellMarks([100], [cell(1, 100)], 300)).toEqual([]);
  });
});
