"""Classical chest X-ray lung baseline: threshold + morphology + two largest components.

No learning: normalise, letterbox to 256², smooth, Otsu threshold for dark (air-filled) pixels
in a central box, drop dark regions at the box's edge (air outside the body, neck, bowel gas), open, keep the two largest
components, fill holes, call the one on the image's left the patient's right lung (label 1),
and resize back to the original size. It is the floor the learned models must clear.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage

from ml.cxr.inference import PredictionResult
from ml.cxr.postprocess import PostprocessConfig
from ml.cxr.preprocessing import BlankImageError, prepare_image, unletterbox_labels


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D array of values in [0, 1]."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    omega = np.cumsum(p)
    mu = np.cumsum(p * (edges[:-1] + edges[1:]) / 2)
    between = (mu[-1] * omega - mu) ** 2 / np.clip(omega * (1 - omega), 1e-12, None)
    return float(edges[int(np.nanargmax(between)) + 1])


def _drop_outer_air(dark: np.ndarray, box: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Remove dark components that touch the search box AND sit near its edge (air, neck, bowel)."""
    lab, _ = ndimage.label(dark)
    edge = box ^ ndimage.binary_erosion(box)
    size = rows[1] - rows[0]
    width = cols[1] - cols[0]
    for value in set(np.unique(lab[edge]).tolist()) - {0}:
        comp = lab == value
        cy, cx = (c.mean() for c in np.nonzero(comp))
        peripheral = (cy < rows[0] + 0.2 * size or cy > rows[1] - 0.1 * size
                      or cx < cols[0] + 0.12 * width or cx > cols[1] - 0.12 * width)
        if peripheral or comp.sum() < 0.02 * box.sum():
            dark[comp] = False
    return dark


def classical_lungs(canvas: np.ndarray, valid: np.ndarray, margin: float = 0.06) -> np.ndarray:
    """Label lungs on a (S, S) canvas in [0, 1]; ``valid`` marks the non-padding pixels.

    Returns:
        (S, S) uint8 labels: 1 right lung (image left), 2 left lung (image right).
    """
    smooth = ndimage.gaussian_filter(canvas, 2.0)
    ys, xs = np.nonzero(valid)
    m = int(margin * canvas.shape[0])
    rows, cols = (ys.min() + m, ys.max() - m), (xs.min() + m, xs.max() - m)
    box = np.zeros_like(valid)
    box[rows[0] : rows[1], cols[0] : cols[1]] = True
    dark = (smooth < otsu_threshold(smooth[box])) & box
    dark = ndimage.binary_opening(dark, iterations=3)
    dark = _drop_outer_air(dark, box, rows, cols)
    lab, n = ndimage.label(dark)
    out = np.zeros(canvas.shape, np.uint8)
    if n == 0:
        return out
    sizes = ndimage.sum(dark, lab, range(1, n + 1))
    keep = sorted((np.argsort(sizes)[::-1][:2] + 1).tolist(), key=lambda k: np.nonzero(lab == k)[1].mean())
    middle = (cols[0] + cols[1]) / 2
    values = [1, 2] if len(keep) == 2 else [1 if np.nonzero(lab == keep[0])[1].mean() < middle else 2]
    for k, value in zip(keep, values, strict=True):
        out[ndimage.binary_fill_holes(lab == k)] = value
    return out


class ClassicalPredictor:
    """Same ``predict`` interface as :class:`ml.cxr.inference.CXRPredictor`, no network."""

    name = "classical_threshold"
    tta_flip = False

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.post = PostprocessConfig(keep_largest=False, remove_specks=False, fill_holes=True, fix_sides=False)

    def predict(self, image: np.ndarray, photometric: str = "MONOCHROME2") -> PredictionResult:
        """Segment one image; returns labels at the input's (H, W) (confidence is not defined: nan)."""
        t0 = time.perf_counter()
        try:
            canvas, geom = prepare_image(image, self.size, photometric)
        except BlankImageError:  # nothing to threshold: no lungs, as the network predictor says
            labels = np.zeros(np.asarray(image).shape[:2], dtype=np.uint8)
        else:
            valid = np.zeros_like(canvas, dtype=bool)
            valid[geom.top : geom.top + geom.new_h, geom.left : geom.left + geom.new_w] = True
            labels = unletterbox_labels(classical_lungs(canvas, valid), geom)
        ms = 1e3 * (time.perf_counter() - t0)
        areas = {"right_lung": int((labels == 1).sum()), "left_lung": int((labels == 2).sum())}
        return PredictionResult(labels=labels, confidence=float("nan"), mean_entropy=float("nan"),
                                areas_px=areas, timings_ms={"model": ms, "total": ms}, model_name=self.name)
