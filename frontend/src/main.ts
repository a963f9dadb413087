/**
 * Entry for Django-rendered pages. Vite drops the exports of application entries, so the
 * API is published as `window.Pleura`; a template loads this entry (found through
 * dist/.vite/manifest.json, key "src/main.ts") with <script type="module"> and calls
 * `Pleura.mountViewer(root, options)` (or the lower-level `createViewer` + `createLayout`),
 * `new Pleura.PleuraApi()` and `new Pleura.Autosaver(viewer, save)`.
 */
import "./style.css";
import * as api from "./api";
import { mountAnnotationPage } from "./annotatePage";
import { mountReviewPage } from "./reviewPage";
import { mountDashboard, mountFigures } from "./dashboard";
import { Autosaver, installLeaveGuard } from "./autosave";
import { mountViewer } from "./mount";
import * as maskCodec from "./maskCodec";
import { LABELS } from "./labels";
import { SHORTCUTS } from "./shortcuts";
import { bindViewerUI, createLayout, setStatus } from "./ui";
import { createViewer, PRESETS, ViewerError } from "./viewer";

const Pleura = {
  mountViewer,
  mountAnnotationPage,
  mountReviewPage,
  mountDashboard,
  mountFigures,
  createViewer,
  Autosaver,
  installLeaveGuard,
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
