/** One-time initialisation of Cornerstone3D core, tools and the DICOM image loader. */
import { getRenderingCapabilities, init as coreInit } from "@cornerstonejs/core";
import { init as dicomImageLoaderInit } from "@cornerstonejs/dicom-image-loader";
import {
  addTool,
  BrushTool,
  init as toolsInit,
  PanTool,
  StackScrollTool,
  WindowLevelTool,
  ZoomTool,
} from "@cornerstonejs/tools";

export class RenderingUnavailableError extends Error {
  constructor() {
    super(
      "This browser cannot use WebGL, which mask editing needs. Enable hardware acceleration " +
        "(or WebGL) in the browser settings and reload the page.",
    );
    this.name = "RenderingUnavailableError";
  }
}

let initialised: Promise<void> | null = null;

async function initOnce(): Promise<void> {
  if (!getRenderingCapabilities().webgl) throw new RenderingUnavailableError();
  await coreInit();
  const workers = Math.max(1, Math.min(4, Math.floor((navigator.hardwareConcurrency || 2) / 2)));
  dicomImageLoaderInit({ maxWebWorkers: workers });
  await toolsInit();
  [PanTool, ZoomTool, WindowLevelTool, StackScrollTool, BrushTool].forEach((tool) => addTool(tool));
}

/** Initialise Cornerstone once per page; later calls share the first call's promise. */
export function initCornerstone(): Promise<void> {
  if (!initialised) {
    initialised = initOnce().catch((err: unknown) => {
      initialised = null;
      throw err;
    });
  }
  return initialised;
}
