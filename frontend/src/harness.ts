/**
 * Test harness page: `harness.html?image=URL&image=URL…&modality=CT[&labelmap=URL]`.
 * Loads the instances (in the order given) and an optional mask, mounts the full viewer UI,
 * and exposes `window.pleuraViewer` plus `window.pleuraHarness` for automated tests.
 */
import "./style.css";
import { fetchMask } from "./api";
import { mountViewer } from "./mount";
import { createLayout, setStatus } from "./ui";
import type { Viewer } from "./viewer";

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

function fail(root: HTMLElement, err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  if (!root.querySelector(".pv-status")) setStatus(createLayout(root), "error", message);
  window.pleuraHarness = { state: "error", error: message };
}

async function main(root: HTMLElement): Promise<void> {
  const params = new URLSearchParams(location.search);
  const imageIds = params.getAll("image").map((url) => `wadouri:${new URL(url, location.href).href}`);
  if (imageIds.length === 0) throw new Error("No images given: add ?image=URL (once per instance) to the address.");
  const labelmapUrl = params.get("labelmap");
  const labelmap = labelmapUrl ? await fetchMask(labelmapUrl) : null;
  const { viewer } = await mountViewer(root, { imageIds, modality: params.get("modality") ?? "CR", labelmap });
  window.pleuraViewer = viewer;
  window.pleuraHarness.state = "ready";
}

const root = document.getElementById("viewer-root");
if (root) main(root).catch((err: unknown) => fail(root, err));
else window.pleuraHarness = { state: "error", error: "harness.html has no #viewer-root element." };
