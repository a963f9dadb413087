/**
 * Test harness page: `harness.html?image=URL&image=URL…&modality=CT[&labelmap=URL]`.
 * Loads the instances (in the order given) and an optional mask, mounts the full viewer UI,
 * and exposes `window.pleuraViewer` plus `window.pleuraHarness.state` for automated tests.
 */
import "./style.css";
import { fetchMask } from "./api";
import { bindViewerUI, createLayout, setStatus } from "./ui";
import { createViewer, type Viewer } from "./viewer";

interface HarnessState {
  state: "loading" | "ready" | "error";
  error: string | null;
}

declare global {
  interface Window {
    pleuraViewer?: Viewer;
    pleuraHarness: HarnessState;
  }
}

window.pleuraHarness = { state: "loading", error: null };

function imageIdsFromQuery(params: URLSearchParams): string[] {
  return params.getAll("image").map((url) => `wadouri:${new URL(url, location.href).href}`);
}

async function main(): Promise<void> {
  const root = document.getElementById("viewer-root");
  if (!root) throw new Error("harness.html has no #viewer-root element.");
  const layout = createLayout(root);
  const params = new URLSearchParams(location.search);
  try {
    const imageIds = imageIdsFromQuery(params);
    if (imageIds.length === 0) throw new Error("No images given: add ?image=URL (once per instance) to the address.");
    const labelmapUrl = params.get("labelmap");
    const labelmap = labelmapUrl ? await fetchMask(labelmapUrl) : null;
    let ui: ReturnType<typeof bindViewerUI> | null = null;
    const viewer = await createViewer(layout.viewport, {
      imageIds,
      modality: params.get("modality") ?? "CR",
      labelmap,
      onChange: (change) => ui?.onChange(change),
      onProgress: (loaded, total) => setStatus(layout, "loading", `Loading images… ${loaded} / ${total}`),
    });
    ui = bindViewerUI(layout, viewer);
    window.pleuraViewer = viewer;
    setStatus(layout, "ready", `${viewer.shape[0]} image${viewer.shape[0] > 1 ? "s" : ""}, ${viewer.shape[2]}×${viewer.shape[1]} pixels. Press ? for shortcuts.`);
    window.pleuraHarness.state = "ready";
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    setStatus(layout, "error", message);
    window.pleuraHarness = { state: "error", error: message };
  }
}

void main();
