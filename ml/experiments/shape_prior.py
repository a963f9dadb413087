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

The measurement (nothing here is shipped; see docs/ml-experiments.md, "X-ray: a learned shape prior")::

    python -m ml.experiments.shape_prior --model cxr --manifest ../shared/data/cxr/manifest.csv --out runs/shape_prior

trains the prior on the ``train`` split's reference masks, picks the strength ``beta`` on the
400-case validation subset that training selects on, and scores the chosen strength and
``beta = 0`` (the model alone) with ``ml evaluate``'s metrics on the full ``val`` split, on the
val cases outside that subset (held out from every choice) and on ``test``; the prior alone is
scored on the subset.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ml.cxr.data import Case, evenly_spaced, load_labels, read_manifest
from ml.cxr.evaluation import evaluate_predictor
from ml.cxr.inference import CXRPredictor
from ml.metrics import read_csv_rows, summarize, write_json
from ml.cxr.preprocessing import letterbox_labels
from ml.registry import sha256_file
from ml.training.trainer import per_case_dice, save_atomic, write_atomic

logger = logging.getLogger(__name__)

NUM_CLASSES = 3


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Two 3×3 convolutions (the first with ``stride``), each with instance norm and leaky ReLU."""
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
                             f"(instance norm needs more than one pixel): use a multiple of {2 ** levels} from {2 ** (levels + 1)} up")
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
        """Product of experts: softmax(log p_model + beta · log max(p_prior, floor)).

        ``beta`` 0 returns the model's probabilities as they are; ``beta`` infinite returns the
        prior's alone (what the shape model makes of the model's answer by itself).
        """
        if self.beta == 0:
            return probs
        prior = self.prior_probs(probs)
        if math.isinf(self.beta):
            return prior.astype(np.float32)
        logit = np.log(np.clip(probs, 1e-8, None)) + self.beta * np.log(np.clip(prior, self.floor, None))
        logit -= logit.max(0, keepdims=True)
        out = np.exp(logit)
        return (out / out.sum(0, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# training

#: Bump when the corruptions, the augmentation or the training loop change, so that a saved
#: prior trained by older code is not reused by :func:`measure`.
PRIOR_VERSION = 1


@dataclass(frozen=True)
class PriorTraining:
    """Everything that decides what :func:`train_shape_prior` learns."""

    grid: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 96, 128)
    latent: int = 128
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    max_ops: int = 3
    sigma_max: float = 1.2

    def __post_init__(self) -> None:
        for name in ("grid", "latent", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        ShapeAutoencoder(grid=self.grid, channels=self.channels, latent=self.latent)  # grid checks, early

    def network(self) -> ShapeAutoencoder:
        return ShapeAutoencoder(grid=self.grid, channels=self.channels, latent=self.latent)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "channels": list(self.channels), "version": PRIOR_VERSION}


def _augment_map(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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
        target = _augment_map(labels, rng)
        inputs.append(soft_onehot(corrupt_labels(target, rng, max_ops), rng.uniform(0, sigma_max)))
        targets.append(target)
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets).astype(np.int64))


def train_shape_prior(train_maps: np.ndarray, cfg: PriorTraining | None = None,
                      progress: bool = False) -> ShapeAutoencoder:
    """Train a :class:`ShapeAutoencoder` on clean (N, G, G) label maps with on-the-fly corruptions
    (one-cycle Adam, Dice + cross-entropy); returns the last epoch's network."""
    from ml.losses import DiceCE

    cfg = cfg or PriorTraining()
    if train_maps.ndim != 3 or train_maps.shape[1:] != (cfg.grid, cfg.grid):
        raise ValueError(f"training maps must be (N, {cfg.grid}, {cfg.grid}), got {train_maps.shape}")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = cfg.network()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = cfg.epochs * math.ceil(len(train_maps) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.05)
    loss_fn = DiceCE()
    epochs: Any = range(cfg.epochs)
    if progress:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc="shape prior", unit="epoch")
    for epoch in epochs:
        model.train()
        order = rng.permutation(len(train_maps))
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            x, y = training_batch(train_maps[order[start:start + cfg.batch_size]], rng, cfg.max_ops, cfg.sigma_max)
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(y)
        logger.info("shape prior: epoch %d/%d loss %.4f", epoch + 1, cfg.epochs, total / len(train_maps))
    return model


@torch.no_grad()
def foreground_dice(model: ShapeAutoencoder, inputs: np.ndarray, targets: np.ndarray, batch_size: int = 64) -> float:
    """Mean over cases of the mean right/left Dice of the network's argmax against ``targets``."""
    model.eval()
    scores = []
    for start in range(0, len(inputs), batch_size):
        pred = model(torch.from_numpy(inputs[start:start + batch_size])).argmax(1)
        scores.append(per_case_dice(pred, torch.from_numpy(targets[start:start + batch_size]), NUM_CLASSES).mean(1))
    return float(torch.cat(scores).mean())


# ---------------------------------------------------------------------------------------------
# the measurement


class ShapePriorPredictor(CXRPredictor):
    """A loaded chest X-ray model whose canvas probabilities pass through a :class:`ShapePrior`
    before post-processing; flip TTA (before the prior) and post-processing (after it) are the
    wrapped predictor's."""

    def __init__(self, base: CXRPredictor, prior: ShapePrior) -> None:
        super().__init__(base.backend, base.card, tta_flip=base.tta_flip, postprocessing=base.post)
        self.prior = prior

    def probabilities(self, canvas: np.ndarray) -> np.ndarray:
        return self.prior.combine(super().probabilities(canvas))


def training_maps(cases: Sequence[Case], size: int, grid: int) -> np.ndarray:
    """The reference label maps of ``cases`` with a right/left split, as the model's (size, size)
    canvas holds them, shrunk to ``grid``. Cases without the split (``lr_labels`` 0) are left out:
    their masks would teach the prior that a whole chest is one lung."""
    sided = [c for c in cases if c.lr_labels]
    if len(sided) < len(cases):
        logger.warning("shape prior: %d case(s) without a right/left split left out", len(cases) - len(sided))
    if not sided:
        raise ValueError("no training cases with right/left labels")
    return np.stack([downsample_labels(letterbox_labels(load_labels(c.label_path), size), grid) for c in sided])


def _worst_mean(values: Sequence[float], fraction: float = 0.05) -> float:
    ordered = np.sort(np.asarray(values, dtype=float))
    return float(ordered[: max(1, int(len(ordered) * fraction))].mean())


def _rows_summary(rows: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Mean, CI, p05 and worst-5 % mean of the case Dice, and the mean per lung, of ``per_case.csv`` rows."""
    dice = [float(r["dice"]) for r in rows]
    stats = summarize(dice)
    return {"n_cases": len(dice), "dice_mean": stats["mean"],
            "dice_ci95": [stats.get("ci95_low", math.nan), stats.get("ci95_high", math.nan)],
            "dice_p05": stats["p05"], "left_lung_dice_mean": float(np.mean([float(r["left_lung_dice"]) for r in rows])),
            "right_lung_dice_mean": float(np.mean([float(r["right_lung_dice"]) for r in rows])),
            "dice_worst5pct_mean": _worst_mean(dice)}


def _prior_for(cfg: PriorTraining, settings: dict[str, Any], weights: Path, train_cases: Sequence[Case],
               size: int, progress: bool) -> ShapeAutoencoder:
    """The prior saved at ``weights`` if it was trained with exactly ``settings``, else a newly trained one (saved)."""
    saved = torch.load(weights, map_location="cpu") if weights.is_file() else None
    if saved is not None and saved.get("settings") == settings:
        net = cfg.network()
        net.load_state_dict(saved["state_dict"])
        logger.info("reusing %s (same settings)", weights)
        return net
    maps = training_maps(train_cases, size, cfg.grid)
    logger.info("training the shape prior on %d reference masks at %d²", len(maps), cfg.grid)
    net = train_shape_prior(maps, cfg, progress=progress)
    save_atomic({"state_dict": net.state_dict(), "settings": settings}, weights)
    return net


def measure(model: str, manifest: Path, out_dir: Path, betas: Sequence[float], cfg: PriorTraining | None = None,
            select_cases: int = 400, train_split: str = "train", val_split: str = "val",
            test_split: str | None = "test", progress: bool = False) -> dict[str, Any]:
    """Train a shape prior, choose ``beta`` on the validation subset, score it on val and test.

    Writes ``out_dir/shape_prior.pt`` (reused only when trained with the same settings, manifest
    contents, split and canvas size, by the same :data:`PRIOR_VERSION`), one ``ml evaluate``-style
    folder per scoring and ``out_dir/summary.json``. The val split is reported whole and without
    the selection subset (``val_heldout``), which is what beta was not chosen on.
    """
    cfg = cfg or PriorTraining()
    if select_cases < 1:
        raise ValueError(f"select_cases must be >= 1, got {select_cases}")
    if any(b < 0 for b in betas):
        raise ValueError(f"beta must be >= 0, got {list(betas)}")
    out_dir = Path(out_dir)
    base = CXRPredictor.from_registry(model, device="cpu")
    if base.size % cfg.grid:
        raise ValueError(f"the model's {base.size}² canvas is not a multiple of the prior's grid {cfg.grid}")
    val_cases = read_manifest(manifest, [val_split])
    tests = read_manifest(manifest, [test_split]) if test_split else []
    train_cases = read_manifest(manifest, [train_split])
    if not val_cases or not train_cases:
        raise ValueError(f"{manifest}: split {train_split!r} or {val_split!r} is empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"training": cfg.to_dict(), "train_split": train_split, "model_input": base.size,
                "manifest_sha256": sha256_file(manifest)}
    prior_net = _prior_for(cfg, settings, out_dir / "shape_prior.pt", train_cases, base.size, progress)

    def score(cases: list[Case], beta: float, name: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
        predictor = ShapePriorPredictor(base, ShapePrior(prior_net, beta=beta))
        evaluate_predictor(predictor, cases, out_dir / name, progress=progress)
        rows = read_csv_rows(out_dir / name / "per_case.csv")
        return _rows_summary(rows), rows

    subset = evenly_spaced(val_cases, select_cases)
    sweep = {str(b): score(subset, b, f"select_beta{b}")[0] for b in sorted({0.0, *map(float, betas)})}
    chosen = max(sweep, key=lambda b: sweep[b]["dice_mean"])  # ties: the smaller beta (0 first)
    sweep["prior_alone"] = score(subset, math.inf, "select_prior_alone")[0]
    result: dict[str, Any] = {
        "model": base.card.name, "settings": settings,
        "selection": {"split": val_split, "n_cases": len(subset), "by_beta": sweep, "chosen_beta": float(chosen)},
    }
    chosen_names = {(c.dataset, c.case) for c in subset}  # case names are unique within a dataset only
    for split, cases in ((val_split, val_cases), (test_split, tests)):
        if not cases:
            continue
        result[split] = {}
        for beta in sorted({0.0, float(chosen)}):
            whole, rows = score(cases, beta, f"{split}_beta{beta}")
            result[split][str(beta)] = whole
            if split == val_split:
                held = [r for r in rows if (r["dataset"], r["case"]) not in chosen_names]
                result.setdefault(f"{split}_heldout", {})[str(beta)] = _rows_summary(held)
    write_atomic(out_dir / "summary.json", lambda tmp: write_json(tmp, result))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    from ml.cli import _positive_int

    parser = argparse.ArgumentParser(
        prog="python -m ml.experiments.shape_prior",
        description="Measure what a learned lung-shape prior (a denoising autoencoder on the training "
                    "masks, combined with the model as a product of experts) buys a chest X-ray model.")
    parser.add_argument("--model", default="cxr", help="model name, alias or weights path (default: cxr)")
    parser.add_argument("--manifest", type=Path, required=True, help="manifest CSV (see ../shared/data/cxr)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0],
                        help="prior strengths to try on the validation subset (0, the model alone, is always tried)")
    parser.add_argument("--epochs", type=_positive_int, default=40, help="training epochs of the prior (default 40)")
    parser.add_argument("--grid", type=_positive_int, default=64, help="the prior's grid (default 64)")
    parser.add_argument("--select-cases", type=_positive_int, default=400,
                        help="size of the evenly spaced validation subset that beta is chosen on (default 400)")
    parser.add_argument("--test-split", default="test", help="split scored at the end besides val ('' for none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        cfg = PriorTraining(grid=args.grid, epochs=args.epochs, seed=args.seed)
    except ValueError as error:
        parser.error(str(error))
    try:
        result = measure(args.model, args.manifest, args.out, args.betas, cfg, select_cases=args.select_cases,
                         test_split=args.test_split or None, progress=args.progress)
    except (ValueError, FileNotFoundError) as error:  # bad settings or inputs: a message, not a traceback
        parser.error(str(error))
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
