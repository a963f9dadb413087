/** Keyboard shortcuts of the viewer; the help overlay is generated from this table. */
import type { PresetName, ToolName, Viewer } from "./viewer";

export interface Shortcut {
  /** Keys as shown to the user. */
  keys: string;
  description: string;
  matches(event: KeyboardEvent): boolean;
  run(viewer: Viewer, ui: ShortcutHost): void;
}

/** What the page around the viewer offers to shortcuts. */
export interface ShortcutHost {
  toggleHelp(): void;
  refresh(): void;
}

const BRUSH_STEP = 1.25;
/** Brush radius limits in mm, shared with the toolbar slider. */
export const MIN_BRUSH_MM = 1;
export const MAX_BRUSH_MM = 60;
const plain = (key: string) => (e: KeyboardEvent) => !e.ctrlKey && !e.metaKey && !e.altKey && e.key.toLowerCase() === key;
const ctrl = (key: string, shift = false) => (e: KeyboardEvent) =>
  (e.ctrlKey || e.metaKey) && !e.altKey && e.shiftKey === shift && e.key.toLowerCase() === key;

const tool = (keys: string, name: ToolName, description: string): Shortcut => ({
  keys,
  description,
  matches: plain(keys.toLowerCase()),
  run: (viewer) => viewer.setTool(name),
});

const preset = (keys: string, name: PresetName, description: string): Shortcut => ({
  keys,
  description,
  matches: plain(keys.toLowerCase()),
  run: (viewer) => viewer.setPreset(name),
});

export const SHORTCUTS: readonly Shortcut[] = [
  tool("B", "brush", "Brush: paint the active label"),
  tool("E", "eraser", "Eraser: clear any label"),
  tool("P", "pan", "Pan tool (middle button always pans)"),
  tool("Z", "zoom", "Zoom tool (right button always zooms)"),
  tool("W", "wl", "Window/level tool"),
  { keys: "1", description: "Active label: right lung", matches: plain("1"), run: (v) => v.setActiveLabel(1) },
  { keys: "2", description: "Active label: left lung", matches: plain("2"), run: (v) => v.setActiveLabel(2) },
  { keys: "]", description: "Larger brush", matches: plain("]"), run: (v) => v.setBrushSize(Math.min(MAX_BRUSH_MM, v.getBrushSize() * BRUSH_STEP)) },
  { keys: "[", description: "Smaller brush", matches: plain("["), run: (v) => v.setBrushSize(Math.max(MIN_BRUSH_MM, v.getBrushSize() / BRUSH_STEP)) },
  { keys: "Ctrl+Z", description: "Undo", matches: ctrl("z"), run: (v) => v.undo() },
  { keys: "Ctrl+Y / Ctrl+Shift+Z", description: "Redo", matches: (e) => ctrl("y")(e) || ctrl("z", true)(e), run: (v) => v.redo() },
  { keys: "M", description: "Show or hide the mask", matches: plain("m"), run: (v) => void v.toggleMask() },
  { keys: "↑ / ↓", description: "Previous / next slice (or mouse wheel)", matches: (e) => e.key === "ArrowUp" || e.key === "ArrowDown", run: () => undefined },
  { keys: "PgUp / PgDn", description: "Ten slices back / forward", matches: (e) => e.key === "PageUp" || e.key === "PageDown", run: () => undefined },
  preset("L", "lung", "Lung window (W1500 / L−600)"),
  preset("K", "mediastinum", "Mediastinum window (W350 / L40)"),
  preset("A", "auto", "Automatic window (X-ray)"),
  { keys: "R", description: "Reset zoom, pan and window", matches: plain("r"), run: (v) => v.resetView() },
  { keys: "?", description: "Show or hide this help", matches: (e) => e.key === "?" || e.key === "F1", run: (_v, ui) => ui.toggleHelp() },
];

const SLICE_KEYS: Readonly<Record<string, number>> = { ArrowUp: -1, ArrowDown: 1, PageUp: -10, PageDown: 10 };

function isTypingTarget(target: EventTarget | null): boolean {
  if (!(target instanceof HTMLElement)) return false;
  return target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName);
}

/** Handle a keydown for the viewer; returns true when a shortcut consumed it. */
export function handleShortcut(event: KeyboardEvent, viewer: Viewer, host: ShortcutHost): boolean {
  if (isTypingTarget(event.target)) return false;
  if (event.key in SLICE_KEYS && !event.ctrlKey && !event.metaKey && !event.altKey) {
    void viewer.scroll(SLICE_KEYS[event.key]);
    return true;
  }
  const shortcut = SHORTCUTS.find((s) => s.matches(event));
  if (!shortcut) return false;
  shortcut.run(viewer, host);
  host.refresh();
  return true;
}
