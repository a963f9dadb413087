/**
 * Viewer page chrome: a labelled toolbar in a sensible tab order, a slice indicator,
 * a status line for messages the user must read, and the keyboard help overlay.
 */
import { LABELS, type LabelValue } from "./labels";
import { handleShortcut, MAX_BRUSH_MM, MIN_BRUSH_MM, SHORTCUTS, type ShortcutHost } from "./shortcuts";
import type { PresetName, ToolName, Viewer, ViewerChange } from "./viewer";

export interface ViewerLayout {
  root: HTMLElement;
  toolbar: HTMLElement;
  /** The element given to createViewer. */
  viewport: HTMLDivElement;
  status: HTMLElement;
  sliceInfo: HTMLElement;
  help: HTMLElement;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
  if (text) node.textContent = text;
  return node;
}

/** Build the static layout inside `root`; the toolbar is filled by {@link bindViewerUI}. */
export function createLayout(root: HTMLElement): ViewerLayout {
  root.classList.add("pleura-viewer");
  const toolbar = el("div", { class: "pv-toolbar", role: "toolbar", "aria-label": "Viewer tools" });
  const stage = el("div", { class: "pv-stage" });
  const viewport = el("div", { class: "pv-viewport", tabindex: "0", "aria-label": "Image viewport", "data-testid": "viewport" });
  const sliceInfo = el("div", { class: "pv-slice", "aria-live": "polite" });
  const status = el("div", { class: "pv-status", role: "status", "aria-live": "polite", "data-state": "loading" }, "Loading images…");
  const help = el("div", { class: "pv-help", role: "dialog", "aria-modal": "false", "aria-label": "Keyboard shortcuts", hidden: "" });
  stage.append(viewport, sliceInfo, help);
  root.replaceChildren(toolbar, stage, status);
  return { root, toolbar, viewport, status, sliceInfo, help };
}

export type StatusKind = "loading" | "ready" | "info" | "error";

/** Show a message to the user; errors are also announced assertively. */
export function setStatus(layout: ViewerLayout, kind: StatusKind, message: string): void {
  layout.status.dataset.state = kind;
  layout.status.setAttribute("role", kind === "error" ? "alert" : "status");
  layout.status.textContent = message;
}

function button(label: string, title: string, onClick: () => void, extra: Record<string, string> = {}): HTMLButtonElement {
  const b = el("button", { type: "button", title, ...extra }, label);
  b.addEventListener("click", onClick);
  return b;
}

function group(label: string, ...children: HTMLElement[]): HTMLElement {
  const g = el("div", { class: "pv-group", role: "group", "aria-label": label });
  g.append(...children);
  return g;
}

function renderHelp(help: HTMLElement, close: () => void): void {
  const heading = el("h2", {}, "Keyboard shortcuts");
  const table = el("table");
  SHORTCUTS.forEach((s) => {
    const row = el("tr");
    row.append(el("th", { scope: "row" }, s.keys), el("td", {}, s.description));
    table.append(row);
  });
  const mouse = el("p", {}, "Mouse: left button uses the selected tool, middle button pans, right button zooms, wheel changes slice.");
  help.replaceChildren(heading, table, mouse, button("Close", "Close the help (Esc)", close, { class: "pv-help-close" }));
}

/** Fill the toolbar for `viewer`, wire keyboard shortcuts, and keep controls in sync. */
export interface BoundUI {
  onChange: (change: ViewerChange) => void;
  refresh: () => void;
  /** Remove the page-level listeners. */
  dispose: () => void;
}

export function bindViewerUI(layout: ViewerLayout, viewer: Viewer): BoundUI {
  const tools: [ToolName, string, string][] = [
    ["brush", "Brush", "Paint the active label (B)"],
    ["eraser", "Eraser", "Erase labels (E)"],
    ["pan", "Pan", "Pan (P)"],
    ["zoom", "Zoom", "Zoom (Z)"],
    ["wl", "Window/level", "Drag to change window and level (W)"],
  ];
  const toolButtons = tools.map(([name, label, title]) =>
    button(label, title, () => { viewer.setTool(name); refresh(); }, { "data-tool": name, "aria-pressed": "false" }),
  );

  const labelButtons = ([1, 2] as LabelValue[]).map((value) => {
    const b = button(LABELS[value].name, `Paint ${LABELS[value].name.toLowerCase()} (${value})`, () => { viewer.setActiveLabel(value); refresh(); }, {
      "data-label": String(value),
      "aria-pressed": "false",
    });
    const swatch = el("span", { class: "pv-swatch", "aria-hidden": "true" });
    swatch.style.background = LABELS[value].hex;
    b.prepend(swatch);
    return b;
  });

  const sizeId = `pv-size-${Math.random().toString(36).slice(2, 8)}`;
  const size = el("input", { type: "range", min: String(MIN_BRUSH_MM), max: String(MAX_BRUSH_MM), step: "1", id: sizeId, "data-control": "brush-size" });
  size.addEventListener("input", () => viewer.setBrushSize(Number(size.value)));
  const sizeLabel = el("label", { for: sizeId }, "Brush (mm)");

  const opacityId = `${sizeId}-op`;
  const opacity = el("input", { type: "range", min: "0", max: "100", step: "5", id: opacityId, "data-control": "opacity" });
  opacity.addEventListener("input", () => viewer.setOpacity(Number(opacity.value) / 100));
  const opacityLabel = el("label", { for: opacityId }, "Mask opacity");
  const toggle = button("Hide mask", "Show or hide the mask (M)", () => { viewer.toggleMask(); refresh(); }, { "data-action": "toggle-mask" });

  const undo = button("Undo", "Undo (Ctrl+Z)", () => { viewer.undo(); refresh(); }, { "data-action": "undo" });
  const redo = button("Redo", "Redo (Ctrl+Y)", () => { viewer.redo(); refresh(); }, { "data-action": "redo" });

  const presets: [PresetName, string, string][] = viewer.modality.toUpperCase() === "CT"
    ? [["lung", "Lung", "Lung window W1500/L−600 (L)"], ["mediastinum", "Mediastinum", "Mediastinum window W350/L40 (K)"]]
    : [["auto", "Auto", "Automatic window from the image histogram (A)"], ["dicom", "DICOM", "Window stored in the image"]];
  const presetButtons = presets.map(([name, label, title]) => button(label, title, () => viewer.setPreset(name), { "data-preset": name }));
  const reset = button("Reset view", "Reset zoom, pan and window (R)", () => viewer.resetView(), { "data-action": "reset" });

  let helpReturnFocus: HTMLElement | null = null;
  const toggleHelp = (): void => {
    const show = layout.help.hidden;
    layout.help.hidden = !show;
    helpButton.setAttribute("aria-expanded", String(show));
    if (show) {
      helpReturnFocus = document.activeElement as HTMLElement | null;
      layout.help.querySelector<HTMLButtonElement>(".pv-help-close")?.focus();
    } else {
      (helpReturnFocus ?? layout.viewport).focus();
    }
  };
  const helpButton = button("Shortcuts (?)", "Show keyboard shortcuts (?)", toggleHelp, { "data-action": "help", "aria-expanded": "false" });
  renderHelp(layout.help, toggleHelp);

  layout.toolbar.replaceChildren(
    group("Tools", ...toolButtons),
    group("Label", ...labelButtons),
    group("Brush size", sizeLabel, size),
    group("Mask display", opacityLabel, opacity, toggle),
    group("History", undo, redo),
    group("Window", ...presetButtons, reset),
    group("Help", helpButton),
  );

  function refresh(): void {
    toolButtons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.tool === viewer.getTool())));
    labelButtons.forEach((b) => b.setAttribute("aria-pressed", String(Number(b.dataset.label) === viewer.getActiveLabel())));
    size.value = String(Math.round(viewer.getBrushSize()));
    opacity.value = String(Math.round(viewer.getOpacity() * 100));
    toggle.textContent = viewer.isMaskVisible() ? "Hide mask" : "Show mask";
    undo.disabled = viewer.readOnly || !viewer.canUndo();
    redo.disabled = viewer.readOnly || !viewer.canRedo();
    if (viewer.readOnly) {  // view only: the editing controls stay visible but disabled
      toolButtons.forEach((b) => { if (b.dataset.tool === "brush" || b.dataset.tool === "eraser") b.disabled = true; });
      labelButtons.forEach((b) => { b.disabled = true; });
      size.disabled = true;
    }
    const n = viewer.getSliceCount();
    layout.sliceInfo.textContent = n > 1 ? `Slice ${viewer.getSliceIndex() + 1} / ${n}` : "";
  }

  const host: ShortcutHost = { toggleHelp, refresh };
  const onKeyDown = (event: KeyboardEvent): void => {
    if (event.key === "Escape" && !layout.help.hidden) {
      toggleHelp();
      event.preventDefault();
      return;
    }
    if (handleShortcut(event, viewer, host)) event.preventDefault();
  };
  document.addEventListener("keydown", onKeyDown);
  layout.viewport.addEventListener("mousedown", () => layout.viewport.focus({ preventScroll: true }));
  // A brush stroke enters the undo history on mouse-up, after its last data event.
  const onMouseUp = (): void => void setTimeout(refresh, 0);
  document.addEventListener("mouseup", onMouseUp);
  refresh();
  return {
    onChange: () => refresh(),
    refresh,
    dispose: () => {
      document.removeEventListener("keydown", onKeyDown);
      document.removeEventListener("mouseup", onMouseUp);
    },
  };
}
