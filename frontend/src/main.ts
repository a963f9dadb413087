/**
 * Entry for Django-rendered pages. Vite drops the exports of application entries, so the
 * API is published as `window.Pleura`; a template loads this entry (found through
 * dist/.vite/manifest.json, key "src/main.ts") with <script type="module"> and calls
 * `Pleura.createViewer(...)`, `Pleura.createLayout(...)` and `new Pleura.PleuraApi()`.
 */
import "./style.css";
import * as api from "./api";
import * as maskCodec from "./maskCodec";
import { LABELS } from "./labels";
import { SHORTCUTS } from "./shortcuts";
import { bindViewerUI, createLayout, setStatus } from "./ui";
import { createViewer, PRESETS, ViewerError } from "./viewer";

const Pleura = {
  createViewer,
  createLayout,
  bindViewerUI,
  setStatus,
  ViewerError,
  PRESETS,
  LABELS,
  SHORTCUTS,
  maskCodec,
  ...api,
};

declare global {
  interface Window {
    Pleura: typeof Pleura;
  }
}

window.Pleura = Pleura;
document.dispatchEvent(new CustomEvent("pleura:ready"));
