/**
 * What the user is told about a dead kernel: one sentence, the last minute of memory
 * against the limit, and what to do next. Plain DOM, so jest tests it directly.
 */

import { formatBytes, linePath } from './format';
import { IDeath } from './model';

const SVG_NS = 'http://www.w3.org/2000/svg';
const WIDTH = 360;
const HEIGHT = 90;

/** The label of the button that brings a checkpoint's variables back. */
export const RESTORE_LABEL = 'Restore variables';

/** The advice for a death's cause (and what its checkpoint, if any, offers). */
export function suggestions(death: IDeath): string[] {
  const advice = causeAdvice(death);
  if (!death.checkpoint) {
    return advice;
  }
  return [
    `Your variables were saved (${death.checkpoint}): "${RESTORE_LABEL}" brings them ` +
      'back in the new kernel; then run the cells after that checkpoint again.',
    ...advice.filter(text => !text.includes('from the top'))
  ];
}

/**
 * The code that restores a checkpoint in the new kernel. The directory goes in double
 * quotes (the magic removes them); one with a double quote in its name cannot, and the
 * new kernel's default (the same notebook's directory) is used.
 */
export function restoreCode(death: IDeath): string {
  const dir = death.checkpoint_dir ?? '';
  const where = dir && !dir.includes('"') && !dir.includes('\n') ? ` "${dir}"` : '';
  return `%load_ext meno_jupyter\n%memrestore${where}`;
}

function causeAdvice(death: IDeath): string[] {
  if (death.cause.includes('out-of-memory') || death.cause.includes('out of memory')) {
    return [
      'Turn on the memory guard (%memguard on): a runaway cell then stops with ' +
        'MemoryGuardError and the kernel keeps its variables.',
      'Shrink DataFrames without losing a value: %optimize_df --all.',
      'Read large files in chunks with the smallest dtypes: meno_jupyter.read_optimized(path).'
    ];
  }
  if (death.cause.startsWith('crashed')) {
    return [
      'A library crashed the process: run the cell again, and report the crash to the ' +
        'library named in the traceback of a rerun if it happens again.'
    ];
  }
  return [
    'Run the notebook from the top to get your variables back (next time, ' +
      '%memcheckpoint on keeps them on disk for %memrestore).'
  ];
}

/** The body of the dialog shown when a kernel dies. */
export function deathBody(death: IDeath): HTMLElement {
  const body = document.createElement('div');
  body.className = 'jp-Meno-death';
  const sentence = document.createElement('p');
  sentence.className = 'jp-Meno-death-summary';
  sentence.textContent = death.summary;
  body.append(sentence);
  if (death.rss.length >= 2) {
    body.append(memoryChart(death));
  }
  const figures = document.createElement('p');
  figures.className = 'jp-Meno-detail';
  const parts = [];
  if (death.rss_bytes !== null) {
    parts.push(`last seen at ${formatBytes(death.rss_bytes)}`);
  }
  if (death.limit_bytes) {
    parts.push(`limit ${formatBytes(death.limit_bytes)} (${death.limit_source})`);
  }
  if (death.exit_code !== null) {
    parts.push(`exit status ${death.exit_code}${death.signal ? ` (${death.signal})` : ''}`);
  }
  if (death.rss.length >= 2 && chartScaledToData(death)) {
    parts.push('chart scaled to the data (the limit is far above)');
  }
  figures.textContent = parts.join(' · ');
  body.append(figures);
  const list = document.createElement('ul');
  list.className = 'jp-Meno-death-advice';
  for (const text of suggestions(death)) {
    const item = document.createElement('li');
    item.textContent = text;
    list.append(item);
  }
  body.append(list);
  return body;
}

/**
 * Whether the last minute stayed far below the limit (under a quarter of it): drawn against
 * the limit it would be a flat line at the bottom, so the chart is scaled to the data.
 */
export function chartScaledToData(death: IDeath): boolean {
  const limit = death.limit_bytes ?? 0;
  return limit > 0 && Math.max(...death.rss) < limit / 4;
}

function memoryChart(death: IDeath): SVGSVGElement {
  const chart = document.createElementNS(SVG_NS, 'svg');
  chart.setAttribute('class', 'jp-Meno-chart jp-Meno-death-chart');
  chart.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
  chart.setAttribute('preserveAspectRatio', 'none');
  const peak = Math.max(...death.rss);
  const scaled = chartScaledToData(death);
  const limit = scaled ? 0 : (death.limit_bytes ?? 0);
  const top = Math.max(peak, limit) * 1.05 || 1;
  const line = document.createElementNS(SVG_NS, 'path');
  line.setAttribute('class', 'jp-Meno-chart-rss');
  line.setAttribute('d', linePath(death.times, death.rss, WIDTH, HEIGHT, top));
  chart.append(line);
  if (limit > 0) {
    const y = HEIGHT - (limit / top) * HEIGHT;
    const limitLine = document.createElementNS(SVG_NS, 'line');
    limitLine.setAttribute('class', 'jp-Meno-chart-limit');
    limitLine.setAttribute('x1', '0');
    limitLine.setAttribute('x2', `${WIDTH}`);
    limitLine.setAttribute('y1', `${y}`);
    limitLine.setAttribute('y2', `${y}`);
    chart.append(limitLine);
  }
  const title = document.createElementNS(SVG_NS, 'title');
  title.textContent = scaled
    ? 'memory in the last minute (scaled to it: the limit is far above)'
    : 'memory in the last minute (dashed: the limit)';
  chart.append(title);
  return chart;
}

/** The label of the button that goes to the killing cell. */
export function goToCellLabel(death: IDeath): string {
  return death.execution_count === null
    ? 'Go to the cell'
    : `Go to cell [${death.execution_count}]`;
}
