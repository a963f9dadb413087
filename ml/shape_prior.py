"""A learned lung-shape prior for chest X-ray predictions (a denoising shape autoencoder).

The network sees only a label map (soft one-hot, background / right lung / left lung, at a
coarse grid), never the image, and is trained to turn corrupted lung masks back into the
reference masks they came from. Corruptions imitate the segmentation model's own failures:
a lung cut short (erased blobs, a raised base), a leak (a blob grown out of the lung's border,
a lowered base), a shifted border (erosion / dilation) and stray specks. With no skip
connections the network can only answer through its bottleneck, i.e. with a plausible lung
shape.

At inference the prior's probabilities are combined with the segmentation model's on the
model canvas as a product of experts, ``log p = log p_model + beta * log p_prior``: where the
prior is unsure (along a plausible border) the model decides; where it is sure (far inside or
far outside any plausible lung) it can overrule an implausible leak or gap.

The measurement (nothing here is shipped; see ml/README, "What a learned shape prior buys")::

    python -m ml.shape_prior --model cxr --manifest ../shared/data/cxr/manifest.csv --out runs/shape_prior

trains the prior on the ``train`` split's reference masks, picks the strength ``beta`` on the
400-case validation subset that training selects on, and scores the chosen strength and
``beta = 0`` (the model alone) on the full ``val`` and ``test`` splits with ``ml evaluate``'s
metrics.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ml.data import evenly_spaced, load_labels, read_manifest
from ml.evaluation import evaluate_predictor
from ml.inference import CXRPredictor
from ml.preprocessing import letterbox_labels

logger = logging.getLogger(__name__)

NUM_CLASSES = 3


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.InstanceNorm2d(c_out, affine=True),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.InstanceNorm2d(c_out, affine=True),
        nn.LeakyReLU(0.1, inplace=True),
    )


class ShapeAutoencoder(nn.Module):
    """Convolutional autoencoder without skip connections: (N, 3, G, G) → (N, 3, G, G) logits.

    ``grid`` must be divisible by 2 ** (len(channels) - 1), leaving at least 2 × 2; the bottleneck is a ``latent``-sized
    vector, so the output is a shape drawn from what the network learned, not a copy of the input.
    """

    def __init__(self, grid: int = 64, channels: tuple[int, ...] = (16, 32, 64, 96, 128),
                 latent: int = 128) -> None:
        super().__init__()
        levels = len(channels) - 1
        if grid % (2 ** levels) or grid // (2 ** levels) < 2:
            raise ValueError(f"grid {grid} is not divisible by 2**{levels} into at least 2x2 "
                             f"(instance norm needs more than one pixel); use a grid of {2 ** (levels + 1)} or more")
        self.grid, self.channels, self.latent = grid, tuple(channels), latent
        self.bottom = grid // (2 ** levels)
        enc = [_block(NUM_CLASSES, channels[0], 1)]
        enc += [_block(channels[i], channels[i + 1], 2) for i in range(levels)]
        self.encoder = nn.Sequential(*enc)
        flat = channels[-1] * self.bottom ** 2
        self.to_latent = nn.Linear(flat, latent)
        self.from_latent = nn.Sequential(nn.Linear(latent, flat), nn.LeakyReLU(0.1, inplace=True))
        dec = []
        for i in range(levels, 0, -1):
            dec += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    _block(channels[i], channels[i - 1], 1)]
        self.decoder = nn.Sequential(*dec)
        self.head = nn.Conv2d(channels[0], NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.to_latent(self.encoder(x).flatten(1))
        h = self.from_latent(z).view(-1, self.channels[-1], self.bottom, self.bottom)
        return self.head(self.decoder(h))


# ---------------------------------------------------------------------------------------------
# corruptions (numpy, one (G, G) uint8 label map at a time)


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _random_blob(labels: np.ndarray, rng: np.random.Generator, where: np.ndarray, rmin: float,
                 rmax: float) -> np.ndarray | None:
    ys, xs = np.nonzero(where)
    if ys.size == 0:
        return None
    i = rng.integers(ys.size)
    g = labels.shape[0]
    ry, rx = rng.uniform(rmin, rmax, size=2) * g
    return _ellipse(labels.shape, ys[i], xs[i], ry, rx, rng.uniform(0, math.pi))


def corrupt_labels(labels: np.ndarray, rng: np.random.Generator, max_ops: int = 3) -> np.ndarray:
    """Return a corrupted copy of a (G, G) label map (0 / 1 right / 2 left), as a segmentation
    model might have drawn it: 0…``max_ops`` operations, chosen at random."""
    out = labels.copy()
    for _ in range(int(rng.integers(0, max_ops + 1))):
        present = [lab for lab in (1, 2) if (out == lab).any()]
        if not present:
            break
        lab = int(rng.choice(present))
        lung = out == lab
        op = rng.random()
        if op < 0.25:  # a gap: part of the lung missed (white-out, dense base)
            blob = _random_blob(out, rng, lung, 0.05, 0.2)
            if blob is not None:
                out[blob & lung] = 0
        elif op < 0.5:  # a leak: a blob grown out of the border (arm, bowel gas, heart)
            edge = lung & ~ndimage.binary_erosion(lung)
            blob = _random_blob(out, rng, edge, 0.04, 0.16)
            if blob is not None:
                out[blob & (out == 0)] = lab
        elif op < 0.65:  # base cut short or run long
            rows = np.nonzero(lung.any(1))[0]
            height = rows[-1] - rows[0] + 1
            k = max(1, int(height * rng.uniform(0.04, 0.2)))
            if rng.random() < 0.5:
                cut = lung.copy()
                cut[: rows[-1] - k + 1] = False
                out[cut] = 0
            else:
                grown = ndimage.binary_dilation(lung, structure=np.array([[0], [1], [1]], bool), iterations=k)
                out[grown & (out == 0)] = lab
        elif op < 0.85:  # border shifted in or out
            it = int(rng.integers(1, 4))
            if rng.random() < 0.5:
                out[lung & ~ndimage.binary_erosion(lung, iterations=it)] = 0
            else:
                out[ndimage.binary_dilation(lung, iterations=it) & (out == 0)] = lab
        else:  # a stray speck of lung elsewhere
            blob = _random_blob(out, rng, out == 0, 0.02, 0.06)
            if blob is not None:
                out[blob & (out == 0)] = lab
    return out


def soft_onehot(labels: np.ndarray, sigma: float) -> np.ndarray:
    """(G, G) labels → (3, G, G) float32 one-hot, Gaussian-softened by ``sigma`` pixels
    (renormalised), like a network's probabilities along a border."""
    onehot = np.stack([(labels == k).astype(np.float32) for k in range(NUM_CLASSES)])
    if sigma > 0:
        onehot = np.stack([ndimage.gaussian_filter(c, sigma) for c in onehot])
        onehot /= np.clip(onehot.sum(0, keepdims=True), 1e-6, None)
    return onehot


def downsample_labels(labels: np.ndarray, grid: int) -> np.ndarray:
    """Majority label of each block when shrinking a square (S, S) label map to (grid, grid)."""
    size = labels.shape[0]
    if size == grid:
        return labels.astype(np.uint8)
    if size % grid:
        raise ValueError(f"label map size {size} is not a multiple of the grid {grid}")
    f = size // grid
    counts = np.stack([(labels == k).reshape(grid, f, grid, f).sum((1, 3)) for k in range(NUM_CLASSES)])
    return counts.argmax(0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# inference


@dataclass
class ShapePrior:
    """A trained shape autoencoder and the strength with which it is combined."""

    model: ShapeAutoencoder
    beta: float = 1.0
    floor: float = 1e-3

    @torch.no_grad()
    def prior_probs(self, probs: np.ndarray) -> np.ndarray:
        """The prior's (3, S, S) probabilities for a model's (3, S, S) canvas probabilities."""
        size = probs.shape[-1]
        x = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))[None]
        if size != self.model.grid:
            x = F.adaptive_avg_pool2d(x, self.model.grid)
        self.model.eval()
        p = torch.softmax(self.model(x), 1)
        if size != self.model.grid:
            p = F.interpolate(p, size=(size, size), mode="bilinear", align_corners=False)
        return p[0].numpy()

    def combine(self, probs: np.ndarray) -> np.ndarray:
        """Product of experts: softmax(log p_model + beta · log max(p_prior, floor))."""
        if self.beta == 0:
            return probs
        prior = self.prior_probs(probs)
        logit = np.log(np.clip(probs, 1e-8, None)) + self.beta * np.log(np.clip(prior, self.floor, None))
        logit -= logit.max(0, keepdims=True)
        out = np.exp(logit)
        return (out / out.sum(0, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# training


def _augment_pair(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mild random affine of a clean (G, G) label map (nearest neighbour): more shapes to learn."""
    g = labels.shape[0]
    angle = math.radians(rng.uniform(-10, 10))
    scale = rng.uniform(0.88, 1.12)
    aspect = rng.uniform(0.92, 1.08)
    sy, sx = scale * aspect, scale / aspect
    c, s = math.cos(angle), math.sin(angle)
    matrix = np.array([[c / sy, -s / sy], [s / sx, c / sx]])
    centre = np.array([g / 2, g / 2])
    shift = rng.uniform(-0.06, 0.06, size=2) * g
    offset = centre - matrix @ (centre + shift)
    return ndimage.affine_transform(labels, matrix, offset=offset, order=0, mode="constant", cval=0)


def training_batch(clean: np.ndarray, rng: np.random.Generator, max_ops: int = 3,
                   sigma_max: float = 1.2) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft corrupted inputs (N, 3, G, G), clean targets (N, G, G)) from (N, G, G) label maps."""
    inputs, targets = [], []
    for labels in clean:
        target = _augment_pair(labels, rng)
        inputs.append(soft_onehot(corrupt_labels(target, rng, max_ops), rng.uniform(0, sigma_max)))
        targets.append(target)
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets).astype(np.int64))


def train_shape_prior(train_maps: np.ndarray, val_pairs: tuple[np.ndarray, np.ndarray] | None = None,
                      grid: int = 64, epochs: int = 40, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                      channels: tuple[int, ...] = (16, 32, 64, 96, 128)) -> ShapeAutoencoder:
    """Train a :class:`ShapeAutoencoder` on clean (N, G, G) label maps with on-the-fly corruptions.

    ``val_pairs`` = (soft inputs (M, 3, G, G), clean targets (M, G, G)): e.g. the segmentation
    model's own predictions on held-out images and their references; the model with the best
    mean foreground Dice there is returned (the last one when no pairs are given).
    """
    from ml.losses import DiceCE

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = ShapeAutoencoder(grid=grid, channels=channels)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(train_maps) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    loss_fn = DiceCE()
    best, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(train_maps))
        total = 0.0
        for start in range(0, len(order), batch_size):
            x, y = training_batch(train_maps[order[start:start + batch_size]], rng)
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(y)
        msg = f"epoch {epoch + 1}/{epochs} loss {total / len(train_maps):.4f}"
        if val_pairs is not None:
            score = foreground_dice(model, *val_pairs)
            msg += f" val dice {score:.4f}"
            if score > best:
                best, best_state = score, {k: v.clone() for k, v in model.state_dict().items()}
        logger.info(msg)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model


@torch.no_grad()
def foreground_dice(model: ShapeAutoencoder, inputs: np.ndarray, targets: np.ndarray, batch_size: int = 64) -> float:
    """Mean over cases of the mean right/left Dice of the model's argmax against ``targets``."""
    model.eval()
    scores = []
    for start in range(0, len(inputs), batch_size):
        pred = model(torch.from_numpy(inputs[start:start + batch_size])).argmax(1).numpy()
        for p, t in zip(pred, targets[start:start + batch_size]):
            d = []
            for lab in (1, 2):
                a, b = p == lab, t == lab
                denom = a.sum() + b.sum()
                d.append(1.0 if denom == 0 else 2.0 * (a & b).sum() / denom)
            scores.append(np.mean(d))
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------------------
# the measurement


class ShapePriorPredictor(CXRPredictor):
    """A loaded chest X-ray model whose canvas probabilities pass through a :class:`ShapePrior`
    before post-processing (everything else as the wrapped predictor does it)."""

    def __init__(self, base: CXRPredictor, prior: ShapePrior) -> None:
        super().__init__(base.backend, base.card, tta_flip=base.tta_flip, postprocessing=base.post)
        self.prior = prior

    def probabilities(self, canvas: np.ndarray) -> np.ndarray:
        return self.prior.combine(super().probabilities(canvas))


def training_maps(manifest: Path, split: str, size: int, grid: int) -> np.ndarray:
    """The reference label maps of a split as the model canvas holds them, shrunk to ``grid``."""
    cases = read_manifest(manifest, [split])
    if not cases:
        raise ValueError(f"no cases in split {split!r} of {manifest}")
    return np.stack([downsample_labels(letterbox_labels(load_labels(c.label_path), size), grid) for c in cases])


def measure(model: str, manifest: Path, out_dir: Path, betas: Sequence[float], epochs: int = 40, grid: int = 64,
            select_cases: int = 400, seed: int = 0, train_split: str = "train", val_split: str = "val",
            test_split: str | None = "test") -> dict[str, Any]:
    """Train a shape prior, choose ``beta`` on the validation subset, score it on val and test.

    Writes ``out_dir/shape_prior.pt`` (reused when present and trained with the same grid and
    epochs), one ``ml evaluate``-style folder per scoring and ``out_dir/summary.json``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = CXRPredictor.from_registry(model, device="cpu")
    weights = out_dir / "shape_prior.pt"
    settings = {"grid": grid, "epochs": epochs, "seed": seed, "train_split": train_split,
                "model_input": base.size, "manifest": str(manifest)}
    saved = torch.load(weights, map_location="cpu") if weights.is_file() else None
    if saved is not None and saved.get("settings") == settings:
        prior_net = ShapeAutoencoder(grid=grid)
        prior_net.load_state_dict(saved["state_dict"])
        logger.info("reusing %s", weights)
    else:
        maps = training_maps(manifest, train_split, base.size, grid)
        logger.info("training the shape prior on %d reference masks at %d²", len(maps), grid)
        prior_net = train_shape_prior(maps, grid=grid, epochs=epochs, seed=seed)
        torch.save({"state_dict": prior_net.state_dict(), "settings": settings}, weights)

    def score(cases: list, beta: float, name: str) -> dict[str, Any]:
        predictor = ShapePriorPredictor(base, ShapePrior(prior_net, beta=beta))
        summary = evaluate_predictor(predictor, cases, out_dir / name)
        keys = ("dice_mean", "dice_p05", "left_lung_dice_mean", "right_lung_dice_mean", "n_cases")
        row = {k: summary[k] for k in keys}
        dice = np.sort([float(r["dice"]) for r in _read_rows(out_dir / name / "per_case.csv")])
        row["dice_worst5pct_mean"] = float(dice[: max(1, len(dice) // 20)].mean())
        return row

    val_cases = read_manifest(manifest, [val_split])
    subset = evenly_spaced(val_cases, select_cases)
    sweep = {str(b): score(subset, b, f"select_beta{b}") for b in sorted({0.0, *map(float, betas)})}
    chosen = max(sweep, key=lambda b: sweep[b]["dice_mean"])
    result: dict[str, Any] = {"settings": settings, "selection": {"split": val_split, "n_cases": len(subset),
                                                                  "by_beta": sweep, "chosen_beta": float(chosen)}}
    for split in [s for s in (val_split, test_split) if s]:
        cases = read_manifest(manifest, [split])
        result[split] = {str(b): score(cases, b, f"{split}_beta{b}") for b in sorted({0.0, float(chosen)})}
    (out_dir / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml.shape_prior",
        description="Measure what a learned lung-shape prior (a denoising autoencoder on the training "
                    "masks, combined with the model as a product of experts) buys a chest X-ray model.")
    parser.add_argument("--model", default="cxr", help="model name, alias or weights path (default: cxr)")
    parser.add_argument("--manifest", type=Path, required=True, help="manifest CSV (see ../shared/data/cxr)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0],
                        help="prior strengths to try on the validation subset (0, the model alone, is always tried)")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs of the prior (default 40)")
    parser.add_argument("--grid", type=int, default=64, help="the prior's grid (default 64)")
    parser.add_argument("--select-cases", type=int, default=400,
                        help="size of the evenly spaced validation subset that beta is chosen on (default 400)")
    parser.add_argument("--test-split", default="test", help="split scored at the end besides val ('' for none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if any(b < 0 for b in args.betas):
        parser.error("--betas must be >= 0")
    result = measure(args.model, args.manifest, args.out, args.betas, epochs=args.epochs, grid=args.grid,
                     select_cases=args.select_cases, seed=args.seed, test_split=args.test_split or None)
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
