/**
 * Pleura's image viewer: a Cornerstone3D stack viewport for one X-ray or one CT series,
 * with a lung labelmap (0 background, 1 right lung, 2 left lung) that the reader can edit.
 *
 * Mask layout: a Uint8Array of shape (D, H, W) in C order, where D follows the order of
 * `imageIds` (one slice per instance; D = 1 for an X-ray), H = Rows and W = Columns.
 */
import {
  cache,
  eventTarget,
  Enums as csEnums,
  getRenderingEngine,
  imageLoader,
  RenderingEngine,
  utilities as csUtils,
  type StackViewport,
  type Types,
} from "@cornerstonejs/core";
import {
  BrushTool,
  Enums as toolsEnums,
  PanTool,
  segmentation,
  StackScrollTool,
  ToolGroupManager,
  utilities as toolsUtils,
  WindowLevelTool,
  ZoomTool,
} from "@cornerstonejs/tools";
import { initCornerstone } from "./cornerstoneInit";
import { changedSlices, type MaskShape } from "./maskCodec";
import { labelColorLUT, LABELS, type LabelValue } from "./labels";

export type ToolName = "brush" | "eraser" | "pan" | "zoom" | "wl";
export type PresetName = "lung" | "mediastinum" | "auto" | "dicom";

export interface Labelmap {
  /** (D, H, W). */
  shape: MaskShape;
  data: Uint8Array;
}

export type ChangeReason = "edit" | "undo" | "redo" | "slice" | "saved" | "locked";

export interface ViewerChange {
  reason: ChangeReason;
  dirty: boolean;
  sliceIndex: number;
  sliceCount: number;
  canUndo: boolean;
  canRedo: boolean;
}

export interface ViewerOptions {
  /** Cornerstone image ids, e.g. `wadouri:/wado?...`; slice order = mask order along D. */
  imageIds: string[];
  /** DICOM modality of the series: "CT" gets CT presets and slice scrolling; anything else is treated as a projection X-ray. */
  modality: string;
  /** Initial mask, or null to start from an empty one. */
  labelmap: Labelmap | null;
  /**
   * Mask that {@link Viewer.changedSlices} compares against, (D*H*W) voxels: the parent
   * revision's mask when `labelmap` is a restored draft. Defaults to `labelmap` (or empty).
   */
  baseline?: Uint8Array;
  onChange?: (change: ViewerChange) => void;
  /** Called while instances load: `loaded` of `total`. */
  onProgress?: (loaded: number, total: number) => void;
  /** View only: the brush and eraser are refused, the mask cannot change (default false). */
  readOnly?: boolean;
  /** Read-only label maps drawn over the image beside the editable mask (e.g. a proposal's outline, a difference). */
  overlays?: OverlayOptions[];
}

/** A read-only label map shown over the image: filled, or as an outline only. */
export interface OverlayOptions {
  /** Name used by {@link Viewer.setOverlayVisible}. */
  name: string;
  labelmap: Labelmap;
  /** RGBA (0–255) per label value; index 0 is ignored (transparent). */
  colors: [number, number, number, number][];
  /** Draw only the outline of each region (default false: filled). */
  outline?: boolean;
  /** Fill opacity 0–1 when not an outline (default 0.55). */
  fillAlpha?: number;
}

export interface Viewer {
  readonly modality: string;
  readonly shape: MaskShape;
  /** True when the viewer is view-only (created so, or {@link lock}ed): editing tools and undo/redo do nothing. */
  readonly readOnly: boolean;
  /** Make the viewer view-only for good (e.g. once the task went to review): switches to the pan tool. */
  lock(): void;
  getLabelmap(): Labelmap;
  setTool(tool: ToolName): void;
  getTool(): ToolName;
  /** Brush radius in mm (image pixels where the instance has no pixel spacing). */
  setBrushSize(radiusMm: number): void;
  getBrushSize(): number;
  setActiveLabel(label: LabelValue): void;
  getActiveLabel(): LabelValue;
  undo(): void;
  redo(): void;
  canUndo(): boolean;
  canRedo(): boolean;
  setPreset(name: PresetName): void;
  /** Fill opacity of the mask, 0–1. */
  setOpacity(alpha: number): void;
  getOpacity(): number;
  /** Show or hide the mask; with no argument, flips it. Returns the new visibility. */
  toggleMask(visible?: boolean): boolean;
  isMaskVisible(): boolean;
  /** True when the mask changed since loading or the last {@link markSaved}. */
  isDirty(): boolean;
  markSaved(): void;
  /** Number of edits, undos and redos so far (lets a saver tell whether edits arrived meanwhile). */
  getEditCount(): number;
  /** Slices (along D) that differ from the mask the viewer was created with. */
  changedSlices(): number[];
  getSliceIndex(): number;
  getSliceCount(): number;
  setSliceIndex(index: number): Promise<void>;
  scroll(delta: number): Promise<void>;
  resetView(): void;
  /** Image (column, row) under a page (client) coordinate, or null off the image. */
  clientToPixel(clientX: number, clientY: number): [number, number] | null;
  /** Show or hide an overlay given in {@link ViewerOptions.overlays}; false when there is no such overlay. */
  setOverlayVisible(name: string, visible: boolean): boolean;
  destroy(): void;
}

export class ViewerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ViewerError";
  }
}

export const PRESETS: Readonly<Record<"lung" | "mediastinum", { width: number; level: number }>> = {
  lung: { width: 1500, level: -600 },
  mediastinum: { width: 350, level: 40 },
};

const DEFAULT_BRUSH_MM = 10;
const DEFAULT_OPACITY = 0.45;
let instanceCounter = 0;

/** Load every instance so that geometry is known for the labelmap; reports progress. */
async function loadAllImages(imageIds: string[], onProgress?: (loaded: number, total: number) => void): Promise<Types.IImage[]> {
  let loaded = 0;
  onProgress?.(0, imageIds.length);
  return Promise.all(
    imageIds.map(async (imageId, index) => {
      try {
        const image = await imageLoader.loadAndCacheImage(imageId);
        onProgress?.(++loaded, imageIds.length);
        return image;
      } catch (err) {
        throw new ViewerError(`Image ${index + 1} of ${imageIds.length} could not be loaded (${imageId.replace(/^wadouri:/, "")}): ${describeLoadError(err)}`);
      }
    }),
  );
}

function describeLoadError(err: unknown, depth = 0): string {
  if (typeof XMLHttpRequest !== "undefined" && err instanceof XMLHttpRequest) {
    return err.status ? `the server answered HTTP ${err.status} ${err.statusText}`.trim() : "the server could not be reached";
  }
  if (err instanceof Error) return err.message;
  if (err && typeof err === "object" && depth < 3) {
    const record = err as Record<string, unknown>;
    for (const key of ["request", "xhr", "error"]) {
      if (record[key]) return describeLoadError(record[key], depth + 1);
    }
    if (typeof record.message === "string") return record.message;
  }
  return String(err);
}

function checkGeometry(images: Types.IImage[]): { rows: number; columns: number } {
  const { rows, columns } = images[0];
  images.forEach((image, z) => {
    if (image.rows !== rows || image.columns !== columns) {
      throw new ViewerError(`Slice ${z + 1} is ${image.columns}×${image.rows} pixels but slice 1 is ${columns}×${rows}; a series must have one size.`);
    }
  });
  return { rows, columns };
}

function checkLabelmapShape(labelmap: Labelmap, shape: MaskShape, what = "The mask"): void {
  const [d, h, w] = labelmap.shape;
  if (d !== shape[0] || h !== shape[1] || w !== shape[2]) {
    throw new ViewerError(`${what} has shape ${d}×${h}×${w} but the images need ${shape.join("×")} (slices×rows×columns).`);
  }
  if (labelmap.data.length !== d * h * w) {
    throw new ViewerError(`${what} has ${labelmap.data.length} voxels; shape ${d}×${h}×${w} needs ${d * h * w}.`);
  }
}

function checkLabelmap(labelmap: Labelmap, shape: MaskShape): void {
  checkLabelmapShape(labelmap, shape);
  for (let i = 0; i < labelmap.data.length; i++) {
    if (labelmap.data[i] > 2) {
      throw new ViewerError(`The mask holds label ${labelmap.data[i]}; only 0 (background), 1 (right lung) and 2 (left lung) are allowed.`);
    }
  }
}

/** Percentile window for projection X-rays: 1st–99th percentile of a subsample. */
function autoVoiRange(pixels: ArrayLike<number>): Types.VOIRange {
  const step = Math.max(1, Math.floor(pixels.length / 65536));
  const sample: number[] = [];
  for (let i = 0; i < pixels.length; i += step) sample.push(pixels[i]);
  sample.sort((a, b) => a - b);
  const lower = sample[Math.floor(sample.length * 0.01)];
  let upper = sample[Math.min(sample.length - 1, Math.floor(sample.length * 0.99))];
  if (upper <= lower) upper = lower + 1;
  return { lower, upper };
}

/** Add the read-only overlays as their own labelmap segmentations; returns overlay name → segmentation id. */
async function addOverlays(viewportId: string, id: string, imageIds: string[], shape: MaskShape,
  overlays: OverlayOptions[]): Promise<Map<string, string>> {
  const ids = new Map<string, string>();
  const sliceSize = shape[1] * shape[2];
  for (const [index, overlay] of overlays.entries()) {
    checkLabelmapShape(overlay.labelmap, shape, `The ${overlay.name} overlay`);
    const overlayId = `${id}-overlay-${index}`;
    const images = imageLoader.createAndCacheDerivedLabelmapImages(imageIds);
    images.forEach((image, z) => {
      image.voxelManager!.setFromScalarData(overlay.labelmap.data.subarray(z * sliceSize, (z + 1) * sliceSize));
    });
    const segments: Record<number, { segmentIndex: number; label: string; locked: boolean; active: boolean; cachedStats: Record<string, unknown> }> = {};
    overlay.colors.forEach((_, value) => {
      if (value > 0) segments[value] = { segmentIndex: value, label: `${overlay.name} ${value}`, locked: true, active: false, cachedStats: {} };
    });
    segmentation.addSegmentations([{
      segmentationId: overlayId,
      representation: { type: toolsEnums.SegmentationRepresentations.Labelmap, data: { imageIds: images.map((image) => image.imageId) } },
      config: { label: overlay.name, segments },
    }]);
    const lut = overlay.colors.map((rgba, value) => (value === 0 ? [0, 0, 0, 0] : rgba)) as Types.ColorLUT;
    await segmentation.addSegmentationRepresentations(viewportId, [
      { segmentationId: overlayId, type: toolsEnums.SegmentationRepresentations.Labelmap, config: { colorLUTOrIndex: lut } },
    ]);
    const alpha = overlay.outline ? 0 : overlay.fillAlpha ?? 0.55;
    segmentation.config.style.setStyle(
      { type: toolsEnums.SegmentationRepresentations.Labelmap, viewportId, segmentationId: overlayId },
      { renderFill: !overlay.outline, fillAlpha: alpha, fillAlphaInactive: alpha, renderOutline: true, outlineOpacity: 1,
        outlineOpacityInactive: 1, outlineWidth: 2, outlineWidthInactive: 2 },
    );
    ids.set(overlay.name, overlayId);
  }
  return ids;
}

/**
 * Create a viewer in `element` (which must have a size) and resolve once the images and
 * the mask are shown. Rejects with a {@link ViewerError} whose message can be shown to the user.
 */
export async function createViewer(element: HTMLDivElement, options: ViewerOptions): Promise<Viewer> {
  const { imageIds, modality, labelmap, baseline, onChange, onProgress } = options;
  let readOnly = options.readOnly ?? false;
  if (imageIds.length === 0) throw new ViewerError("There are no images to show.");
  await initCornerstone();

  const isCT = modality.toUpperCase() === "CT";
  const id = `pleura-${++instanceCounter}`;
  const renderingEngineId = `${id}-engine`;
  const viewportId = `${id}-viewport`;
  const toolGroupId = `${id}-tools`;
  const segmentationId = `${id}-mask`;

  const images = await loadAllImages(imageIds, onProgress);
  const { rows, columns } = checkGeometry(images);
  const shape: MaskShape = [imageIds.length, rows, columns];
  if (labelmap) checkLabelmap(labelmap, shape);

  element.oncontextmenu = (e) => e.preventDefault();
  const renderingEngine = new RenderingEngine(renderingEngineId);
  renderingEngine.enableElement({ viewportId, type: csEnums.ViewportType.STACK, element });
  const viewport = renderingEngine.getViewport(viewportId) as StackViewport;
  const initialIndex = isCT ? Math.floor(imageIds.length / 2) : 0;
  await viewport.setStack(imageIds, initialIndex);

  const labelmapImages = imageLoader.createAndCacheDerivedLabelmapImages(imageIds);
  const sliceSize = rows * columns;
  if (labelmap) {
    labelmapImages.forEach((image, z) => {
      image.voxelManager!.setFromScalarData(labelmap.data.subarray(z * sliceSize, (z + 1) * sliceSize));
    });
  }
  if (baseline && baseline.length !== shape[0] * sliceSize) {
    throw new ViewerError(`The baseline mask has ${baseline.length} voxels; the images need ${shape[0] * sliceSize}.`);
  }
  const initialMask = baseline ? baseline.slice() : labelmap ? labelmap.data.slice() : new Uint8Array(shape[0] * sliceSize);

  segmentation.addSegmentations([
    {
      segmentationId,
      representation: {
        type: toolsEnums.SegmentationRepresentations.Labelmap,
        data: { imageIds: labelmapImages.map((image) => image.imageId) },
      },
      config: {
        label: "Lungs",
        segments: {
          1: { segmentIndex: 1, label: LABELS[1].name, locked: false, active: true, cachedStats: {} },
          2: { segmentIndex: 2, label: LABELS[2].name, locked: false, active: false, cachedStats: {} },
        },
      },
    },
  ]);
  await segmentation.addSegmentationRepresentations(viewportId, [
    {
      segmentationId,
      type: toolsEnums.SegmentationRepresentations.Labelmap,
      config: { colorLUTOrIndex: labelColorLUT() as Types.ColorLUT },
    },
  ]);
  const overlayIds = await addOverlays(viewportId, id, imageIds, shape, options.overlays ?? []);
  segmentation.activeSegmentation.setActiveSegmentation(viewportId, segmentationId); // the brush edits the mask
  segmentation.segmentIndex.setActiveSegmentIndex(segmentationId, 1);

  const toolGroup = ToolGroupManager.createToolGroup(toolGroupId);
  if (!toolGroup) throw new ViewerError("The viewer's tool group could not be created.");
  [PanTool, ZoomTool, WindowLevelTool, StackScrollTool, BrushTool].forEach((tool) => toolGroup.addTool(tool.toolName));
  toolGroup.addViewport(viewportId, renderingEngineId);
  const { MouseBindings } = toolsEnums;
  toolGroup.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
  toolGroup.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
  toolGroup.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
  toolGroup.setToolConfiguration(BrushTool.toolName, { brushSize: DEFAULT_BRUSH_MM });
  // The brush's own key actions (i/e interpolation, Enter/Escape preview) would clash with
  // the viewer's shortcuts (E is the eraser); the viewer has no use for them.
  const brushInstance = toolGroup.getToolInstance(BrushTool.toolName) as { configuration: { actions?: unknown } };
  brushInstance.configuration.actions = {};

  const toolClassNames: Record<ToolName, string> = {
    brush: BrushTool.toolName,
    eraser: BrushTool.toolName,
    pan: PanTool.toolName,
    zoom: ZoomTool.toolName,
    wl: WindowLevelTool.toolName,
  };
  let currentTool: ToolName = "brush";
  let brushSize = DEFAULT_BRUSH_MM;
  let activeLabel: LabelValue = 1;
  let opacity = DEFAULT_OPACITY;
  let maskVisible = true;
  let dirty = false;
  let editCount = 0;
  let destroyed = false;
  const history = csUtils.HistoryMemo.DefaultHistoryMemo;
  const clearHistory = (): void => {
    history.size = history.size; // the setter empties the ring
  };
  clearHistory(); // undo must not reach edits made in an earlier viewer on this page

  const emit = (reason: ChangeReason): void => {
    onChange?.({
      reason,
      dirty,
      sliceIndex: viewport.getCurrentImageIdIndex(),
      sliceCount: imageIds.length,
      canUndo: history.canUndo,
      canRedo: history.canRedo,
    });
  };

  const setTool = (tool: ToolName): void => {
    if (readOnly && (tool === "brush" || tool === "eraser")) return; // view only: no editing tool
    const previous = toolClassNames[currentTool];
    const next = toolClassNames[tool];
    if (previous !== next) toolGroup.setToolPassive(previous);
    if (tool === "brush" || tool === "eraser") {
      toolGroup.setToolConfiguration(BrushTool.toolName, {
        activeStrategy: tool === "brush" ? "FILL_INSIDE_CIRCLE" : "ERASE_INSIDE_CIRCLE",
      });
    }
    toolGroup.setToolActive(next, { bindings: [{ mouseButton: MouseBindings.Primary }] });
    currentTool = tool;
  };
  setTool(readOnly ? "pan" : "brush");

  const applyStyle = (): void => {
    segmentation.config.style.setStyle(
      { type: toolsEnums.SegmentationRepresentations.Labelmap, viewportId, segmentationId },
      { renderFill: true, fillAlpha: opacity, fillAlphaInactive: opacity, renderOutline: true, outlineOpacity: Math.min(1, opacity + 0.4) },
    );
  };
  applyStyle();

  const setPreset = (name: PresetName): void => {
    if (name === "lung" || name === "mediastinum") {
      const { width, level } = PRESETS[name];
      viewport.setProperties({ voiRange: { lower: level - width / 2, upper: level + width / 2 } });
    } else if (name === "auto") {
      const image = cache.getImage(viewport.getCurrentImageId());
      if (!image) throw new ViewerError("The current image is not loaded yet.");
      viewport.setProperties({ voiRange: autoVoiRange(image.getPixelData()) });
    } else {
      viewport.resetProperties();
    }
    viewport.render();
  };
  setPreset(isCT ? "lung" : "auto");

  const onDataModified = (evt: Event): void => {
    const detail = (evt as CustomEvent<{ segmentationId?: string }>).detail;
    if (detail?.segmentationId !== segmentationId) return;
    dirty = true;
    editCount++;
    emit("edit");
  };
  const onNewImage = (): void => emit("slice");
  eventTarget.addEventListener(toolsEnums.Events.SEGMENTATION_DATA_MODIFIED, onDataModified);
  element.addEventListener(csEnums.Events.STACK_NEW_IMAGE, onNewImage);

  const readLabelmap = (): Uint8Array => {
    const out = new Uint8Array(shape[0] * sliceSize);
    labelmapImages.forEach((image, z) => {
      // The labelmap image ids resolve to the same cached images the tools edit.
      const cached = cache.getImage(image.imageId) ?? image;
      out.set(cached.voxelManager!.getScalarData() as Uint8Array, z * sliceSize);
    });
    return out;
  };

  const setSliceIndex = async (index: number): Promise<void> => {
    const clamped = Math.max(0, Math.min(imageIds.length - 1, Math.round(index)));
    if (clamped !== viewport.getCurrentImageIdIndex()) await viewport.setImageIdIndex(clamped);
  };

  const viewer: Viewer = {
    modality,
    shape,
    get readOnly() {
      return readOnly;
    },
    lock() {
      if (readOnly) return;
      if (currentTool === "brush" || currentTool === "eraser") setTool("pan");
      readOnly = true;
      emit("locked");
    },
    getLabelmap: () => ({ shape: [...shape] as MaskShape, data: readLabelmap() }),
    setTool,
    getTool: () => currentTool,
    setBrushSize(radiusMm: number) {
      if (!(radiusMm > 0)) throw new ViewerError(`Brush size must be positive, got ${radiusMm}.`);
      brushSize = radiusMm;
      toolsUtils.segmentation.setBrushSizeForToolGroup(toolGroupId, radiusMm);
    },
    getBrushSize: () => brushSize,
    setActiveLabel(label: LabelValue) {
      activeLabel = label;
      segmentation.segmentIndex.setActiveSegmentIndex(segmentationId, label);
    },
    getActiveLabel: () => activeLabel,
    undo() {
      if (readOnly || !history.canUndo) return;
      history.undo();
      dirty = true;
      editCount++;
      emit("undo");
    },
    redo() {
      if (readOnly || !history.canRedo) return;
      history.redo();
      dirty = true;
      editCount++;
      emit("redo");
    },
    canUndo: () => history.canUndo,
    canRedo: () => history.canRedo,
    setPreset,
    setOpacity(alpha: number) {
      opacity = Math.max(0, Math.min(1, alpha));
      applyStyle();
    },
    getOpacity: () => opacity,
    toggleMask(visible?: boolean) {
      maskVisible = visible ?? !maskVisible;
      segmentation.config.visibility.setSegmentationRepresentationVisibility(
        viewportId,
        { segmentationId, type: toolsEnums.SegmentationRepresentations.Labelmap },
        maskVisible,
      );
      return maskVisible;
    },
    isMaskVisible: () => maskVisible,
    isDirty: () => dirty,
    getEditCount: () => editCount,
    markSaved() {
      dirty = false;
      emit("saved");
    },
    changedSlices: () => changedSlices(initialMask, readLabelmap(), shape),
    getSliceIndex: () => viewport.getCurrentImageIdIndex(),
    getSliceCount: () => imageIds.length,
    setSliceIndex,
    scroll: (delta: number) => setSliceIndex(viewport.getCurrentImageIdIndex() + delta),
    resetView() {
      viewport.resetCamera();
      setPreset(isCT ? "lung" : "auto");
    },
    clientToPixel(clientX: number, clientY: number) {
      const rect = element.getBoundingClientRect();
      const world = viewport.canvasToWorld([clientX - rect.left, clientY - rect.top]);
      const [col, row] = csUtils.worldToImageCoords(viewport.getCurrentImageId(), world) ?? [];
      if (col === undefined || row === undefined) return null;
      if (col < 0 || row < 0 || col >= columns || row >= rows) return null;
      return [Math.floor(col), Math.floor(row)];
    },
    setOverlayVisible(name: string, visible: boolean) {
      const overlayId = overlayIds.get(name);
      if (!overlayId) return false;
      segmentation.config.visibility.setSegmentationRepresentationVisibility(
        viewportId, { segmentationId: overlayId, type: toolsEnums.SegmentationRepresentations.Labelmap }, visible);
      return true;
    },
    destroy() {
      if (destroyed) return;
      destroyed = true;
      clearHistory();
      eventTarget.removeEventListener(toolsEnums.Events.SEGMENTATION_DATA_MODIFIED, onDataModified);
      element.removeEventListener(csEnums.Events.STACK_NEW_IMAGE, onNewImage);
      ToolGroupManager.destroyToolGroup(toolGroupId);
      segmentation.removeSegmentation(segmentationId);
      overlayIds.forEach((overlayId) => segmentation.removeSegmentation(overlayId));
      getRenderingEngine(renderingEngineId)?.destroy();
    },
  };

  const resizeObserver = new ResizeObserver(() => {
    if (!destroyed) renderingEngine.resize(true, true);
  });
  resizeObserver.observe(element);
  const baseDestroy = viewer.destroy;
  viewer.destroy = () => {
    resizeObserver.disconnect();
    baseDestroy();
  };
  emit("slice");
  return viewer;
}
