import {
  CrossingWatcher,
  formatBytes,
  formatDelta,
  highPressureMessage,
  linePath,
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
});

describe('pressure', () => {
  it('classifies shares of the limit', () => {
    expect(pressureOf(10, 100)).toBe('low');
    expect(pressureOf(70, 100)).toBe('medium');
    expect(pressureOf(84, 100)).toBe('medium');
    expect(pressureOf(85, 100)).toBe('high');
    expect(pressureOf(50, 100, [0.4, 0.5])).toBe('high');
    expect(pressureOf(50, 0)).toBe('low');
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
