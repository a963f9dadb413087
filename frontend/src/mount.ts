/**
 * One call to put a complete viewer (layout, toolbar, shortcuts, status line) into a page
 * element; errors are shown in the page and rethrown.
 */
import { bindViewerUI, createLayout, setStatus, type BoundUI, type ViewerLayout } from "./ui";
import { createViewer, type Viewer, type ViewerChange, type ViewerOptions } from "./viewer";

export interface MountedViewer {
  viewer: Viewer;
  layout: ViewerLayout;
  /** Remove the viewer, its listeners and its layout. */
  destroy: () => void;
}

export async function mountViewer(root: HTMLElement, options: ViewerOptions): Promise<MountedViewer> {
  const layout = createLayout(root);
  let ui: BoundUI | null = null;
  try {
    const viewer = await createViewer(layout.viewport, {
      ...options,
      onChange: (change: ViewerChange) => {
        ui?.onChange(change);
        options.onChange?.(change);
      },
      onProgress: (loaded, total) => {
        setStatus(layout, "loading", `Loading images… ${loaded} / ${total}`);
        options.onProgress?.(loaded, total);
      },
    });
    ui = bindViewerUI(layout, viewer);
    const [d, h, w] = viewer.shape;
    setStatus(layout, "ready", `${d} image${d > 1 ? "s" : ""}, ${w}×${h} pixels. Press ? for keyboard shortcuts.`);
    const bound = ui;
    return {
      viewer,
      layout,
      destroy: () => {
        bound.dispose();
        viewer.destroy();
        root.replaceChildren();
      },
    };
  } catch (err) {
    setStatus(layout, "error", err instanceof Error ? err.message : String(err));
    throw err;
  }
}
