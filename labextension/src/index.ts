/**
 * meno-jupyter for JupyterLab: a "Memory" sidebar panel and a status bar item for the
 * active notebook's kernel, fed by the server extension (which measures kernels from
 * outside, so both keep working while a cell is busy).
 */

import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  Notification,
  showDialog
} from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ICodeCellModel } from '@jupyterlab/cells';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { ALL_FIGURES, BadgeFigure } from './badges';
import { CellBadges } from './badgeview';
import { RESTORE_LABEL, deathBody, goToCellLabel, restoreCode } from './deaths';

import { highPressureMessage, shortPath } from './format';
import { FetchError, Fetcher, IDeath, MemoryModel } from './model';
import { MemoryPanel } from './panel';
import { MemoryStatusItem } from './status';

const PLUGIN_ID = '@meno/jupyter:plugin';
const SHOWN_DEATHS_KEY = 'meno-jupyter:deaths-shown';
const KILLER_CELL_CLASS = 'jp-Meno-killer-cell';
const GOTO_HEAVIEST = 'meno-jupyter:goto-heaviest-cell';
const SHOW_PANEL = 'meno-jupyter:show-panel';
/** Set once the Memory panel was shown on a first start (then the layout remembers it). */
const INTRODUCED_KEY = 'meno-jupyter:panel-introduced';
/** What JupyterLab's own dialog for a dead kernel says (replaced by the post-mortem). */
const GENERIC_DEATH_TEXTS = ['appears to have died', 'Kernel Restarting'];

/** The post-mortems already shown in this browser (so each is shown once). */
function shownDeaths(): Set<string> {
  try {
    return new Set(JSON.parse(window.localStorage.getItem(SHOWN_DEATHS_KEY) ?? '[]'));
  } catch {
    return new Set();
  }
}

function rememberShown(id: string): void {
  const shown = [...shownDeaths(), id].slice(-200);
  try {
    window.localStorage.setItem(SHOWN_DEATHS_KEY, JSON.stringify(shown));
  } catch {
    // private mode: the death may be shown again after a reload, nothing worse
  }
}

/** Whether this browser starts JupyterLab with meno for the first time (then remembered). */
function firstStart(): boolean {
  try {
    if (window.localStorage.getItem(INTRODUCED_KEY) !== null) {
      return false;
    }
    window.localStorage.setItem(INTRODUCED_KEY, '1');
    return true;
  } catch {
    return false; // storage blocked: never pop the panel open unasked
  }
}

const MIN_INTERVAL_MS = 250;

const memoryIcon = new LabIcon({
  name: 'meno:memory',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path class="jp-icon3" ' +
    'fill="#616161" d="M4 6h16v10H4zM2 18h20v2H2zM6 8v6h2V8zm4 0v6h2V8zm4 0v6h2V8z"/></svg>'
});

function serverFetcher(): Fetcher {
  const settings = ServerConnection.makeSettings();
  return async (path: string) => {
    const url = URLExt.join(settings.baseUrl, 'meno-jupyter', path);
    const response = await ServerConnection.makeRequest(url, {}, settings);
    if (!response.ok) {
      throw new FetchError(`${response.status} ${response.statusText}`, response.status);
    }
    return response.json();
  };
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Live kernel memory: sidebar panel and status bar item.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILabShell, IStatusBar, ISettingRegistry, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    labShell: ILabShell | null,
    statusBar: IStatusBar | null,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null
  ) => {
    const model = new MemoryModel(serverFetcher());
    let intervalMs = 1000;
    let notify = true;
    let timer: number | undefined;

    const scrollToCell = (executionCount: number): boolean => {
      const notebook = tracker.currentWidget?.content;
      if (!notebook) {
        return false;
      }
      const index = notebook.widgets.findIndex(
        cell =>
          cell.model.type === 'code' &&
          (cell.model as ICodeCellModel).executionCount === executionCount
      );
      if (index < 0) {
        return false;
      }
      notebook.activeCellIndex = index;
      void notebook.scrollToItem(index, 'center');
      return true;
    };

    const badges = new CellBadges(tracker, model);
    app.commands.addCommand(GOTO_HEAVIEST, {
      label: 'Memory: Go to the Heaviest Cell',
      caption: 'The cell of this notebook with the largest measured peak',
      isEnabled: () => tracker.currentWidget !== null,
      execute: () => {
        const panel = tracker.currentWidget;
        const index = panel ? badges.heaviestIndex(panel) : -1;
        if (!panel || index < 0) {
          Notification.info(
            'meno-jupyter: no cell of this notebook has memory figures yet ' +
              '(watch the kernel from the Memory panel, then run cells)'
          );
          return;
        }
        app.shell.activateById(panel.id);
        panel.content.activeCellIndex = index;
        void panel.content.scrollToItem(index, 'center');
      }
    });
    palette?.addItem({ command: GOTO_HEAVIEST, category: 'Memory' });

    /** Run `code` silently in the open kernel `kernelId`; say so if it fails. */
    const runInKernel = (kernelId: string, code: string, what: string): void => {
      let kernel: Kernel.IKernelConnection | null = null;
      tracker.forEach(widget => {
        const found = widget.sessionContext.session?.kernel;
        if (found && found.id === kernelId) {
          kernel = found;
        }
      });
      if (!kernel) {
        Notification.error('meno-jupyter: that kernel is no longer open');
        return;
      }
      const future = (kernel as Kernel.IKernelConnection).requestExecute({
        code,
        silent: true,
        store_history: false
      });
      future.done
        .then(reply => {
          if (reply.content.status !== 'ok') {
            Notification.error(
              `meno-jupyter: ${what} could not be turned on in this kernel ` +
                '(is meno-jupyter installed in its environment?)'
            );
          }
        })
        .catch(reason => console.warn(`meno-jupyter: ${what} failed`, reason));
    };
    const startWatch = (kernelId: string): void =>
      runInKernel(kernelId, '%load_ext meno_jupyter\n%memwatch on', 'recording every cell');

    const startGuard = (kernelId: string): void =>
      runInKernel(kernelId, '%load_ext meno_jupyter\n%memguard on', 'the memory guard');

    /** The open notebook whose kernel died, if any. */
    const notebookOf = (death: IDeath): NotebookPanel | null => {
      let found: NotebookPanel | null = null;
      tracker.forEach(widget => {
        if (widget.sessionContext.session?.kernel?.id === death.kernel_id) {
          found = widget;
        }
      });
      return found;
    };

    const showDeath = (death: IDeath): boolean => {
      const widget = notebookOf(death);
      if (!widget) {
        return false;
      }
      const notebook = widget.content;
      let index = death.cell_id
        ? notebook.widgets.findIndex(cell => cell.model.id === death.cell_id)
        : -1;
      if (index < 0 && death.execution_count !== null) {
        index = notebook.widgets.findIndex(
          cell =>
            cell.model.type === 'code' &&
            (cell.model as ICodeCellModel).executionCount === death.execution_count
        );
      }
      if (index < 0) {
        return false;
      }
      app.shell.activateById(widget.id);
      notebook.activeCellIndex = index;
      notebook.widgets[index].addClass(KILLER_CELL_CLASS);
      notebook.widgets[index].node.title = death.summary;
      void notebook.scrollToItem(index, 'center');
      return true;
    };
    // The marker stays on the killing cell until it is run again.
    NotebookActions.executed.connect((_, args) => {
      if (args.cell.hasClass(KILLER_CELL_CLASS)) {
        args.cell.removeClass(KILLER_CELL_CLASS);
        args.cell.node.title = '';
      }
    });

    let dialogOpen = false;
    const announceDeaths = (): void => {
      if (dialogOpen) {
        return;
      }
      const shown = shownDeaths();
      const death = [...model.deaths]
        .reverse()
        .find(d => !shown.has(d.id) && notebookOf(d) !== null);
      if (!death) {
        return;
      }
      rememberShown(death.id);
      dialogOpen = true;
      // JupyterLab's own "Kernel Restarting ... appears to have died" says less: ours, with
      // the cause, replaces it rather than waiting behind it.
      Dialog.tracker.forEach(dialog => {
        const text = dialog.node.textContent ?? '';
        if (GENERIC_DEATH_TEXTS.some(generic => text.includes(generic))) {
          dialog.reject();
        }
      });
      const found = death.execution_count !== null || death.cell_id !== null;
      const buttons = [Dialog.cancelButton({ label: 'Close' })];
      if (found) {
        buttons.push(Dialog.okButton({ label: goToCellLabel(death) }));
      }
      if (death.checkpoint) {
        buttons.push(Dialog.okButton({ label: RESTORE_LABEL }));
      }
      void showDialog({
        title: 'The kernel died',
        body: new Widget({ node: deathBody(death) }),
        buttons
      }).then(result => {
        dialogOpen = false;
        if (!result.button.accept) {
          return;
        }
        if (result.button.label === RESTORE_LABEL) {
          void restoreVariables(death);
        } else {
          showDeath(death);
        }
      });
    };

    /** Run %memrestore in the dead kernel's notebook's new kernel; show what it says. */
    const restoreVariables = async (death: IDeath): Promise<void> => {
      const widget = notebookOf(death);
      if (!widget) {
        Notification.error('meno-jupyter: that notebook is no longer open');
        return;
      }
      await widget.sessionContext.ready;
      const kernel = widget.sessionContext.session?.kernel;
      if (!kernel) {
        Notification.error('meno-jupyter: the notebook has no kernel to restore into');
        return;
      }
      const texts: string[] = [];
      const future = kernel.requestExecute({
        code: restoreCode(death),
        silent: false,
        store_history: false
      });
      future.onIOPub = message => {
        const content = message.content as {
          text?: string;
          data?: Record<string, unknown>;
          ename?: string;
          evalue?: string;
        };
        if (message.header.msg_type === 'stream' && content.text) {
          texts.push(content.text);
        } else if (content.data && typeof content.data['text/plain'] === 'string') {
          texts.push(content.data['text/plain'] as string);
        } else if (message.header.msg_type === 'error') {
          texts.push(`${content.ename}: ${content.evalue}`);
        }
      };
      const reply = await future.done;
      const body = document.createElement('pre');
      body.className = 'jp-Meno-restore-report';
      body.textContent = texts.join('\n').trim() || 'The kernel said nothing.';
      void showDialog({
        title:
          reply.content.status === 'ok'
            ? 'Variables restored'
            : 'The variables could not be restored',
        body: new Widget({ node: body }),
        buttons: [Dialog.okButton({ label: 'Close' })]
      });
    };

    const panel = new MemoryPanel(model, scrollToCell, startGuard, showDeath, startWatch);
    panel.title.icon = memoryIcon;
    panel.title.label = labShell ? '' : 'Memory';
    app.shell.add(panel, 'right', { rank: 200 });

    app.commands.addCommand(SHOW_PANEL, {
      label: 'Memory: Show the Memory Panel',
      caption: 'Live memory of the active kernel, its cells and deaths',
      execute: () => app.shell.activateById(panel.id)
    });
    palette?.addItem({ command: SHOW_PANEL, category: 'Memory' });

    const item = new MemoryStatusItem(model);
    item.node.addEventListener('click', () => app.shell.activateById(panel.id));
    if (statusBar) {
      statusBar.registerStatusItem(`${PLUGIN_ID}-status`, {
        item,
        align: 'left',
        rank: 2,
        isActive: () => true
      });
    } else {
      // Notebook 7 has no status bar: the same item sits in its top bar.
      item.id = 'jp-Meno-topbar-item';
      item.addClass('jp-Meno-topbar');
      app.shell.add(item, 'top', { rank: 1000 });
    }

    const follow = (): void => {
      // With the Launcher (or any other document) in front, no notebook is active.
      const front = labShell?.currentWidget;
      const notebook =
        front && !tracker.has(front) ? null : tracker.currentWidget;
      const kernel = notebook?.sessionContext.session?.kernel;
      model.setActiveKernel(kernel?.id ?? null);
    };
    labShell?.currentChanged.connect(follow);
    tracker.currentChanged.connect((_, current) => {
      follow();
      current?.sessionContext.kernelChanged.connect(follow);
    });
    tracker.forEach(panel => panel.sessionContext.kernelChanged.connect(follow));
    tracker.widgetAdded.connect((_, added) => {
      added.sessionContext.kernelChanged.connect(follow);
      added.sessionContext.ready.then(follow).catch(() => undefined);
    });

    model.onChange(announceDeaths);
    model.onChange(() => {
      if (!notify || !model.limit) {
        return;
      }
      for (const kernel of model.crossings) {
        const name = kernel.path ? shortPath(kernel.path) : kernel.name;
        Notification.warning(
          highPressureMessage(
            name,
            kernel.percent ?? 0,
            model.limitOf(kernel)?.bytes ?? model.limit.limit_bytes
          ),
          { autoClose: 10000 }
        );
      }
      model.crossings = [];
    });

    const tick = async (): Promise<void> => {
      follow();
      try {
        await model.poll();
      } finally {
        timer = window.setTimeout(tick, intervalMs);
      }
    };

    const applySettings = (settings: ISettingRegistry.ISettings): void => {
      intervalMs = Math.max(
        MIN_INTERVAL_MS,
        settings.get('refreshIntervalMs').composite as number
      );
      notify = settings.get('notifyHighPressure').composite as boolean;
      const figures = settings.get('badgeFigures').composite as BadgeFigure[];
      badges.settings = {
        enabled: settings.get('cellBadges').composite as boolean,
        figures: figures.filter(f => ALL_FIGURES.includes(f)),
        colourFrom: settings.get('badgeColourFrom').composite as number
      };
      badges.refreshAll();
    };
    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          applySettings(settings);
          settings.changed.connect(applySettings);
        })
        .catch(reason => console.warn('meno-jupyter: settings not loaded', reason));
    }
    void app.restored.then(() => {
      // The first JupyterLab start with meno shows the panel once (the README's promise);
      // from then on the restored layout says whether it is open.
      if (labShell && firstStart()) {
        app.shell.activateById(panel.id);
      }
      follow();
      if (timer === undefined) {
        void tick();
      }
    });
  }
};

export default plugin;
