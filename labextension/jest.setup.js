// jsdom lacks DragEvent, which @lumino/dragdrop refers to at import.
if (typeof globalThis.DragEvent === 'undefined') {
  globalThis.DragEvent = class DragEvent extends MouseEvent {};
}
