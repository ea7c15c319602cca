import { deathBody, goToCellLabel, restoreCode, suggestions } from '../deaths';
import { IDeath, MemoryModel } from '../model';

function death(overrides: Partial<IDeath> = {}): IDeath {
  return {
    id: 'k:42:1.000', kernel_id: 'k', pid: 42, died_at: 100, cause:
      'killed by the out-of-memory killer', summary:
      'The kernel was killed by the out-of-memory killer while running cell [12] (m = a.merge(b)).',
    exit_code: -9, signal: 'SIGKILL', execution_count: 12, cell_id: 'c12',
    source_head: 'm = a.merge(b)', rss_bytes: 590 * 2 ** 20, peak_rss_bytes: 590 * 2 ** 20,
    limit_bytes: 600 * 2 ** 20, limit_source: 'cgroup of the kernel', path: 'work/a.ipynb',
    times: [40, 70, 99], rss: [100 * 2 ** 20, 300 * 2 ** 20, 590 * 2 ** 20],
    ...overrides
  };
}

describe('a dead kernel explained', () => {
  it('says what happened, shows the last minute against the limit, and what to do', () => {
    const body = deathBody(death());
    expect(body.querySelector('.jp-Meno-death-summary')?.textContent).toContain(
      'killed by the out-of-memory killer while running cell [12]'
    );
    expect(body.querySelector('.jp-Meno-chart-rss')?.getAttribute('d')).toMatch(/^M0\.0,/);
    expect(body.querySelector('.jp-Meno-chart-limit')).not.toBeNull();
    expect(body.textContent).toContain('last seen at 590.0 MiB');
    expect(body.textContent).toContain('limit 600.0 MiB (cgroup of the kernel)');
    expect(body.textContent).toContain('exit status -9 (SIGKILL)');
    expect(body.textContent).toContain('%memguard on');
    expect(goToCellLabel(death())).toBe('Go to cell [12]');
    expect(goToCellLabel(death({ execution_count: null }))).toBe('Go to the cell');
  });

  it('gives advice by cause', () => {
    expect(suggestions(death({ cause: 'crashed: segmentation fault' }))[0]).toContain(
      'library crashed'
    );
    expect(suggestions(death({ cause: 'exited with code 3' }))[0]).toContain('from the top');
    expect(deathBody(death({ rss: [], times: [] })).querySelector('svg')).toBeNull();
  });

  it('scales the chart to the data when the limit is far above', () => {
    const far = death({ rss: [100e6, 200e6, 150e6], times: [1, 2, 3], limit_bytes: 25e9 });
    const body = deathBody(far);
    expect(body.querySelector('.jp-Meno-chart-limit')).toBeNull();
    expect(body.querySelector('.jp-Meno-detail')?.textContent).toContain(
      'chart scaled to the data (the limit is far above)'
    );
    // The line uses the height: its highest point is near the top, not at the bottom.
    const d = body.querySelector('.jp-Meno-chart-rss')?.getAttribute('d') ?? '';
    const ys = [...d.matchAll(/[ML]\s*[\d.]+[ ,]([\d.]+)/g)].map(m => Number(m[1]));
    expect(Math.min(...ys)).toBeLessThan(20);
    const near = death({ rss: [20e9, 24e9], times: [1, 2], limit_bytes: 25e9 });
    expect(deathBody(near).querySelector('.jp-Meno-chart-limit')).not.toBeNull();
    expect(deathBody(near).querySelector('.jp-Meno-detail')?.textContent).not.toContain(
      'scaled'
    );
  });

  it('offers the checkpoint when the kernel kept one', () => {
    const kept = death({
      cause: 'exited with code 3',
      checkpoint: 'last checkpoint after cell [3] at 14:02:11: 4 variables, 1.2 GiB',
      checkpoint_dir: '/home/a/my checkpoints'
    });
    const advice = suggestions(kept);
    expect(advice[0]).toContain('Your variables were saved (last checkpoint after cell [3]');
    expect(advice[0]).toContain('"Restore variables" brings them back');
    expect(advice.join(' ')).not.toContain('from the top');
    expect(restoreCode(kept)).toBe(
      '%load_ext meno_jupyter\n%memrestore "/home/a/my checkpoints"'
    );
    expect(restoreCode({ ...kept, checkpoint_dir: '/a/"b"' })).toBe(
      '%load_ext meno_jupyter\n%memrestore'
    );
    expect(suggestions(death({ cause: 'exited with code 3' }))[0]).toContain(
      '%memcheckpoint on'
    );
    expect(restoreCode(death())).toBe('%load_ext meno_jupyter\n%memrestore');
  });

  it('are fetched once each, newest first, also from an older server without them', async () => {
    const asked: string[] = [];
    let deaths = [death()];
    const model = new MemoryModel(async path => {
      asked.push(path);
      if (path.startsWith('deaths')) {
        return { time: 0, deaths };
      }
      return { time: 0, kernels: [], limit: null };
    });
    await model.poll();
    deaths = [death({ id: 'k:43:200.000', died_at: 200, pid: 43 })];
    await model.poll();
    expect(model.deaths.map(d => d.pid)).toEqual([43, 42]);
    expect(asked.filter(p => p.startsWith('deaths'))).toEqual(['deaths', 'deaths?since=100']);
    const old = new MemoryModel(async path => {
      if (path.startsWith('deaths')) {
        throw new Error('404');
      }
      return { time: 0, kernels: [], limit: null };
    });
    await old.poll();
    expect(old.deaths).toEqual([]);
  });
});
