"""CT lung segmentation with the learned model: volume in, right/left labels and measures out."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ml.ct.classical import segment_classical
from ml.ct.network import predict_lung_probability
from ml.ct.postprocess import LEFT_LUNG, RIGHT_LUNG, body_mask, bounding_box, components_holding, postprocess_lungs
from ml.ct.preprocessing import Box, small_grid_spacing, to_model_grid, z_factor
from ml.ct.quantify import quantify_lungs

logger = logging.getLogger(__name__)

IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_EPS = 1e-3


@dataclass(frozen=True)
class HURefinement:
    """Boundary refinement on the input grid: uncertain voxels decided by an HU threshold.

    The threshold is either fixed (``threshold_hu``) or derived from the in-plane voxel size
    (``rim_offset_mm``, see :meth:`threshold_for`). Exactly one of the two is set.

    Attributes:
        threshold_hu: fixed lung/soft-tissue threshold in HU.
        rim_offset_mm: distance in mm by which the reference lung surface lies outside the
            50 %-air boundary (the partial-volume rim of the pleura that contours include).
        margin: probability half-width around 0.5 treated as uncertain.
        merge_air: also merge air below ``merge_air_hu`` inside the body that touches a lung (on
            the model grid) into the nearest lung, recovering parenchyma the network missed.
        merge_air_hu: air threshold for ``merge_air`` in HU.
    """

    threshold_hu: float | None = None
    rim_offset_mm: float | None = None
    margin: float = 0.3
    merge_air: bool = False
    merge_air_hu: float = -400.0

    def __post_init__(self) -> None:
        if (self.threshold_hu is None) == (self.rim_offset_mm is None):
            raise ValueError("HURefinement needs exactly one of threshold_hu and rim_offset_mm")
        if self.rim_offset_mm is not None and self.rim_offset_mm < 0:
            raise ValueError(f"rim_offset_mm must be >= 0, got {self.rim_offset_mm}")

    def threshold_for(self, spacing: tuple[float, float, float]) -> float:
        """The HU threshold for a volume of voxel ``spacing`` ``(D, H, W)`` mm.

        A boundary voxel of in-plane size ``v`` whose air fraction is ``a`` has about
        ``-1000·a`` HU. Counting it as lung when ``a ≥ 0.5 − rim_offset_mm / v`` moves the
        surface ``rim_offset_mm`` outward whatever the voxel size. With 0.3 mm: −200 HU at
        1 mm (manual contours that include the pleural rim), −425 HU at 4 mm, where the same
        rim is a small part of a voxel. The in-plane size is the geometric mean of the two
        in-plane spacings. Clipped to [−500, −100] HU.
        """
        if self.threshold_hu is not None:
            return float(self.threshold_hu)
        in_plane = math.sqrt(float(spacing[1]) * float(spacing[2]))
        air_fraction = 0.5 - float(self.rim_offset_mm) / in_plane
        return float(min(RIM_THRESHOLD_RANGE_HU[1], max(RIM_THRESHOLD_RANGE_HU[0], -1000.0 * air_fraction)))

    def at(self, spacing: tuple[float, float, float]) -> HURefinement:
        """This refinement with the threshold fixed for ``spacing``."""
        return replace(self, threshold_hu=self.threshold_for(spacing), rim_offset_mm=None)


RIM_THRESHOLD_RANGE_HU = (-500.0, -100.0)
"""Bounds of the spacing-derived threshold: never beyond 50 % air, never into soft tissue."""

HU_REFINEMENT = HURefinement(rim_offset_mm=0.3, margin=0.3, merge_air=True, merge_air_hu=-400.0)
"""The refinement shipped with the CT model. The reference surface lies ``rim_offset_mm``
outside the 50 %-air boundary; the offset was fitted on the training cases (full-resolution
manual NSCLC contours and the 3 mm imlab volumes) and checked on the val cases; see
docs/ml-experiments.md, "CT: post-processing". A fixed −250 HU, used before, suits 1 mm voxels only."""

KEEP_FRAGMENTS_ML = 10.0
"""Network lung components of at least this volume beyond the two lungs are kept (joined to the
nearest lung): a tumour can cut an apex off the rest of its lung."""


@dataclass
class CTResult:
    """Result of segmenting one CT volume.

    Attributes:
        labels: ``(D, H, W)`` uint8, 0 background, 1 right lung, 2 left lung (canonical grid).
        volumes: measures from :func:`ml.ct.quantify.quantify_lungs` (mL, HU, fractions).
        confidence: mean certainty ``|2p − 1|`` of the lung probability over the lung region
            (1.0 for the classical method, which has no probability).
        method: ``"model:<name>"`` or ``"classical"``.
        timings: seconds per stage.
    """

    labels: np.ndarray
    volumes: dict[str, float]
    confidence: float
    method: str
    timings: dict[str, float] = field(default_factory=dict)


class CTPredictor:
    """Loads the CT lung network once and segments volumes with it.

    Args:
        model: 2D network with 2 output classes (background, lung).
        size: model input side in pixels.
        context: neighbouring slices on each side given as channels.
        name: model name for provenance.
        batch_size: slices per forward pass.
        refine: optional HU boundary refinement (see :class:`HURefinement`).
        keep_fragments_ml: keep network lung components of at least this many mL beyond the
            two lungs (see :func:`ml.ct.postprocess.join_large_fragments`); ``None`` drops them.
    """

    def __init__(self, model: torch.nn.Module, size: int, context: int, name: str, batch_size: int = 16,
                 refine: HURefinement | None = None, keep_fragments_ml: float | None = None):
        self.model = model.eval()
        self.refine = refine
        self.size = size
        self.context = context
        self.name = name
        self.batch_size = batch_size
        self.keep_fragments_ml = keep_fragments_ml

    @classmethod
    def from_registry(cls, name: str = "ct") -> CTPredictor:
        """Load a shipped CT model once, by name, alias (``"ct"``) or weights path.

        The weights' sha256 is checked against the model card (:func:`ml.registry.load_model`).

        Raises:
            ml.registry.RegistryError: unknown model, missing weights or hash mismatch.
            ValueError: the card is not a CT model.
        """
        from ml.registry import load_model

        model, card = load_model(name)
        if card.modality != "ct":
            raise ValueError(f"model {card.name!r} is a {card.modality!r} model, expected a CT model")
        context = int(card.preprocessing.get("context_slices", 1))
        refine = card.postprocessing.get("hu_refinement")
        return cls(model, int(card.input_size[0]), context, card.name,
                   refine=HURefinement(**refine) if refine else None,
                   keep_fragments_ml=card.postprocessing.get("keep_fragments_ml"))

    def predict(
        self,
        volume_hu: np.ndarray,
        spacing: tuple[float, float, float],
        direction: tuple[float, ...] = IDENTITY_DIRECTION,
    ) -> CTResult:
        """Segment right and left lungs.

        Args:
            volume_hu: ``(D, H, W)`` HU in canonical orientation (see :mod:`ml.ct.io`).
            spacing: voxel spacing ``(D, H, W)`` in mm.
            direction: canonical direction cosines (9 floats), used for the sides.

        Returns:
            A :class:`CTResult` on the input grid.
        """
        timings: dict[str, float] = {}
        start = time.perf_counter()
        factor = z_factor(spacing[0])
        image, hu_small, box = to_model_grid(volume_hu, self.size, factor)
        timings["preprocess_s"] = time.perf_counter() - start
        probability = predict_lung_probability(self.model, image, self.context, self.batch_size)
        timings["network_s"] = time.perf_counter() - start - sum(timings.values())
        body = body_mask(hu_small)
        extra = None
        if self.refine and self.refine.merge_air:  # air inside the body only (never the outside air)
            extra = (hu_small < self.refine.merge_air_hu) & body
        small_labels = postprocess_lungs(
            probability > 0.5, hu_small, small_grid_spacing(spacing, box, self.size, factor), direction, extra,
            keep_fragments_ml=self.keep_fragments_ml, body=body, airway_margin_mm=float(spacing[1]),
        )
        refine = self.refine.at(spacing) if self.refine else None
        labels = upsample_labels(probability, small_labels, box, volume_hu.shape, volume_hu, refine)
        timings["postprocess_s"] = time.perf_counter() - start - sum(timings.values())
        volumes = quantify_lungs(labels, volume_hu, spacing)
        timings["quantify_s"] = time.perf_counter() - start - sum(timings.values())
        return CTResult(labels, volumes, _confidence(probability, small_labels), f"model:{self.name}", timings)


def predict_classical(
    volume_hu: np.ndarray, spacing: tuple[float, float, float], direction: tuple[float, ...] = IDENTITY_DIRECTION
) -> CTResult:
    """The classical baseline in the same result form (fallback proposal method)."""
    start = time.perf_counter()
    labels = segment_classical(volume_hu, spacing, direction)
    middle = time.perf_counter()
    volumes = quantify_lungs(labels, volume_hu, spacing)
    timings = {"segment_s": middle - start, "quantify_s": time.perf_counter() - middle}
    return CTResult(labels, volumes, 1.0, "classical", timings)


def _confidence(probability: np.ndarray, labels: np.ndarray) -> float:
    region = (probability > 0.1) | (labels > 0)
    if not region.any():
        return 0.0
    return float(np.abs(2.0 * probability[region] - 1.0).mean())


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill holes of each ``(H, W)`` slice of a ``(d, H, W)`` boolean mask."""
    for z in range(mask.shape[0]):
        if mask[z].any():
            box = ndimage.find_objects(mask[z].astype(np.uint8))[0]
            mask[z][box] = ndimage.binary_fill_holes(mask[z][box])
    return mask


def _resize_depth(volume: np.ndarray, depth: int) -> np.ndarray:
    """Linear interpolation of ``(d, S, S)`` to ``(depth, S, S)`` along the first axis."""
    tensor = torch.from_numpy(np.ascontiguousarray(volume))[None, None]
    size = (depth, volume.shape[1], volume.shape[2])
    return F.interpolate(tensor, size=size, mode="trilinear", align_corners=False)[0, 0].numpy()


def _side_indicator(small_labels: np.ndarray, rings: int) -> np.ndarray:
    """+1 on the left lung, −1 on the right, carried ``rings`` voxels out from each lung.

    A boundary voxel that the refinement adds just outside a model-grid lung needs a side: with
    the indicator 0 there it would fall to the right lung by default, which scattered right-lung
    specks along the left lung's surface. Each ring goes to the lung that reaches it first;
    voxels reached by both in the same ring (between touching lungs) stay 0, the midline.
    """
    side = (small_labels == LEFT_LUNG).astype(np.float32) - (small_labels == RIGHT_LUNG).astype(np.float32)
    claimed = small_labels > 0
    for _ in range(rings):
        left = ndimage.binary_dilation(side > 0) & ~claimed
        right = ndimage.binary_dilation(side < 0) & ~claimed
        side[left & ~right] = 1.0
        side[right & ~left] = -1.0
        claimed |= left | right
    return side


def upsample_labels(
    probability: np.ndarray,
    small_labels: np.ndarray,
    box: Box,
    shape: tuple[int, int, int],
    volume_hu: np.ndarray | None = None,
    refine: HURefinement | None = None,
    chunk: int = 32,
) -> np.ndarray:
    """Bring model-grid labels back to the input grid with sub-pixel lung boundaries.

    The lung probability is made to agree with the post-processed labels (kept voxels > 0.5;
    removed ones and everything more than 2 voxels away from a lung 0), resized bilinearly into the crop box and thresholded at 0.5; each lung voxel
    takes the side whose resized indicator is larger (the indicator reaches as far as the
    probability is kept, see :func:`_side_indicator`).

    Args:
        probability: ``(d, S, S)`` lung probability on the model grid (``d ≤ D`` when thin
            slices were averaged; interpolated back along D).
        small_labels: ``(d, S, S)`` post-processed labels (1 right, 2 left) on the model grid.
        box: the crop box on the input grid.
        shape: input grid shape ``(D, H, W)``.
        volume_hu: ``(D, H, W)`` HU on the input grid (needed with ``refine``).
        refine: when given, voxels of uncertain probability (within ``refine.margin`` of 0.5)
            are lung only if below its threshold for this volume (sharper pleural boundary;
            a spacing-derived threshold needs the volume's spacing, see :meth:`HURefinement.at`).
        chunk: slices resized at once (bounds memory).

    Returns:
        ``(D, H, W)`` uint8 labels.
    """
    if refine is not None and refine.threshold_hu is None:
        raise ValueError("upsample_labels needs a fixed threshold: pass refine.at(spacing)")
    depth, height, width = shape
    lungs = small_labels > 0
    # away from the kept lungs (airways, fragments, stray voxels) the probability is zeroed
    near = ndimage.binary_dilation(lungs, iterations=2) & ~((probability > 0.5) & ~lungs)
    agreed = np.where(lungs, np.maximum(probability, 0.5 + _EPS), np.where(near, probability, 0.0))
    side = _side_indicator(small_labels, rings=2)
    if agreed.shape[0] != depth:  # thin slices were averaged: interpolate back along D
        agreed, side = (_resize_depth(a, depth) for a in (agreed.astype(np.float32), side))
    out = np.zeros(shape, dtype=np.uint8)
    sy0, sy1 = max(box.y0, 0), min(box.y1, height)
    sx0, sx1 = max(box.x0, 0), min(box.x1, width)
    refining = refine is not None and volume_hu is not None
    core = np.zeros((depth, sy1 - sy0, sx1 - sx0), dtype=bool) if refining else None
    for start in range(0, depth, chunk):
        block = torch.from_numpy(np.stack([agreed[start : start + chunk], side[start : start + chunk]], axis=1))
        block = F.interpolate(block.float(), size=(box.side, box.side), mode="bilinear", align_corners=False)
        block = block[:, :, sy0 - box.y0 : sy1 - box.y0, sx0 - box.x0 : sx1 - box.x0].numpy()
        lung = block[:, 0] > 0.5
        if refining:
            hu = volume_hu[start : start + chunk, sy0:sy1, sx0:sx1]
            lung = (block[:, 0] > 0.5 + refine.margin) | (
                (block[:, 0] > 0.5 - refine.margin) & (hu < refine.threshold_hu)
            )
            lung = _fill_holes_per_slice(lung)  # vessels in the band stay lung
            core[start : start + chunk] = block[:, 0] > 0.5 + refine.margin
        labels = np.where(block[:, 1] > 0, LEFT_LUNG, RIGHT_LUNG).astype(np.uint8)
        out[start : start + chunk, sy0:sy1, sx0:sx1] = np.where(lung, labels, 0)
    if core is not None:
        _drop_detached_band(out[:, sy0:sy1, sx0:sx1], core)
    return out


def _drop_detached_band(labels: np.ndarray, core: np.ndarray) -> None:
    """Clear (in place) pieces of lung that only the HU refinement made.

    The band around each lung is decided voxel by voxel by HU, which leaves partial-volume
    specks off the lung's surface. A 26-connected piece of lung (both sides labelled at once: a
    speck touching either lung belongs to it) that holds no voxel of ``core`` (probability above
    the uncertain band, 0.8) is such a speck. A piece the network drew is kept whatever its
    size if it is confident somewhere; one drawn only at 0.5–0.8 throughout on this grid would
    be cleared too (kept fragments are at least ``keep_fragments_ml`` and far more confident).
    A piece of the band that lies on the kept lung but is cut from it by denser voxels (a
    vessel at the surface) is a speck as well: anchoring on the kept lung instead left four
    such pieces on lungdx_A0001.
    """
    mask = labels > 0
    if not mask.any():
        return
    box = bounding_box(mask)
    view = labels[box]
    view[mask[box] & ~components_holding(mask[box], core[box])] = 0
