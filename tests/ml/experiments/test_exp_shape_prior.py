"""The learned lung-shape prior: corruptions, the autoencoder, the product of experts, the measurement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.experiments import shape_prior as sp


def two_lungs(grid: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:grid, 0:grid] / grid
    labels = np.zeros((grid, grid), np.uint8)
    labels[((xx - 0.3) / 0.13) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1] = 1
    labels[((xx - 0.7) / 0.12) ** 2 + ((yy - 0.5) / 0.28) ** 2 < 1] = 2
    return labels


def test_corruptions_keep_the_labels_valid_and_leave_the_input_alone() -> None:
    clean = two_lungs(64)
    before = clean.copy()
    rng = np.random.default_rng(0)
    assert np.array_equal(sp.corrupt_labels(clean, rng, max_ops=0), clean)
    changed = 0
    for _ in range(30):
        out = sp.corrupt_labels(clean, rng)
        assert out.shape == clean.shape and out.dtype == np.uint8
        assert set(np.unique(out)) <= {0, 1, 2}
        changed += not np.array_equal(out, clean)
    assert changed >= 15
    assert np.array_equal(clean, before)


def test_corruptions_of_an_empty_map_do_nothing() -> None:
    empty = np.zeros((16, 16), np.uint8)
    assert not sp.corrupt_labels(empty, np.random.default_rng(1)).any()


def test_downsampling_takes_each_block_majority() -> None:
    labels = np.zeros((4, 4), np.uint8)
    labels[:2, :2] = [[1, 1], [1, 0]]  # 3 of 4 right lung
    labels[:2, 2:] = [[2, 0], [0, 0]]  # 1 of 4 left lung: background wins
    labels[2:, 2:] = 2
    assert sp.downsample_labels(labels, 2).tolist() == [[1, 0], [0, 2]]
    with pytest.raises(ValueError, match="not a multiple"):
        sp.downsample_labels(np.zeros((6, 6), np.uint8), 4)


def test_soft_onehot_sums_to_one() -> None:
    soft = sp.soft_onehot(two_lungs(32), sigma=1.0)
    assert soft.shape == (3, 32, 32)
    np.testing.assert_allclose(soft.sum(0), 1.0, atol=1e-5)
    assert (soft.argmax(0) == two_lungs(32)).mean() > 0.95
    assert np.array_equal(sp.soft_onehot(two_lungs(32), 0).argmax(0), two_lungs(32))


def test_autoencoder_shapes_and_grid_check() -> None:
    net = sp.ShapeAutoencoder(grid=16, channels=(4, 8, 8), latent=8)
    assert net(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="not divisible"):
        sp.ShapeAutoencoder(grid=18, channels=(4, 8, 8))
    with pytest.raises(ValueError, match="at least 2x2"):
        sp.ShapeAutoencoder(grid=4, channels=(4, 8, 8))


class FixedPrior(sp.ShapePrior):
    """A prior whose probabilities are given, to test the combination alone."""

    def __init__(self, probs: np.ndarray, beta: float) -> None:
        super().__init__(model=None, beta=beta)  # type: ignore[arg-type]
        self.fixed = probs

    def prior_probs(self, probs: np.ndarray) -> np.ndarray:
        return self.fixed


def test_a_confident_prior_overrules_and_an_unsure_one_does_not() -> None:
    model = np.zeros((3, 1, 2), np.float32)
    model[:, 0, 0] = [0.3, 0.7, 0.0]  # the model says right lung (a leak, say)
    model[:, 0, 1] = [0.3, 0.7, 0.0]
    prior = np.zeros((3, 1, 2), np.float32)
    prior[:, 0, 0] = [0.99, 0.005, 0.005]  # sure it is background
    prior[:, 0, 1] = [1 / 3, 1 / 3, 1 / 3]  # no opinion
    out = FixedPrior(prior, beta=1.0).combine(model)
    assert out.argmax(0).tolist() == [[0, 1]]
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-6)
    assert FixedPrior(prior, beta=0.0).combine(model) is model


def test_training_learns_lung_shapes() -> None:
    rng = np.random.default_rng(0)
    maps = np.stack([np.roll(two_lungs(16), int(rng.integers(-1, 2)), axis=1) for _ in range(32)])
    inputs = np.stack([sp.soft_onehot(sp.corrupt_labels(m, rng), 0.5) for m in maps[:8]])
    cfg = sp.PriorTraining(grid=16, channels=(8, 16, 16), epochs=12, batch_size=8, lr=3e-3)
    torch.manual_seed(0)
    untrained = sp.foreground_dice(cfg.network(), inputs, maps[:8])
    trained = sp.train_shape_prior(maps, cfg)
    assert sp.foreground_dice(trained, inputs, maps[:8]) > max(0.8, untrained + 0.2)
    with pytest.raises(ValueError, match="must be"):
        sp.train_shape_prior(maps[:, :8, :8], cfg)


def test_training_settings_are_checked_before_any_work() -> None:
    with pytest.raises(ValueError, match="epochs"):
        sp.PriorTraining(epochs=0)
    with pytest.raises(ValueError, match="divisible"):
        sp.PriorTraining(grid=40)


def test_prior_alone_and_the_wrapped_predictor(tiny_model: Path, make_case) -> None:  # noqa: ANN001
    from ml.cxr.inference import CXRPredictor

    base = CXRPredictor.from_registry(str(tiny_model), device="cpu")
    net = sp.ShapeAutoencoder(grid=32, channels=(4, 8, 8), latent=8)
    image = make_case(64, seed=3)[0]
    same = sp.ShapePriorPredictor(base, sp.ShapePrior(net, beta=0.0))
    assert same.tta_flip == base.tta_flip and same.post == base.post
    assert np.array_equal(same.predict(image).labels, base.predict(image).labels)
    canvas = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    alone = sp.ShapePrior(net, beta=float("inf"))
    np.testing.assert_allclose(alone.combine(base.probabilities(canvas)), alone.prior_probs(base.probabilities(canvas)),
                               atol=1e-6)


def test_measurement_end_to_end(synthetic_manifest: Path, tiny_model: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "prior"
    args = ["--model", str(tiny_model), "--manifest", str(synthetic_manifest), "--out", str(out),
            "--betas", "0.5", "--epochs", "1", "--grid", "32", "--select-cases", "2"]
    assert sp.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selection"]["n_cases"] == 2
    assert set(summary["selection"]["by_beta"]) == {"0.0", "0.5", "prior_alone"}
    chosen = str(summary["selection"]["chosen_beta"])
    for split, n in (("val", 4), ("test", 3), ("val_heldout", 2)):
        assert set(summary[split]) == {"0.0", chosen}
        assert summary[split]["0.0"]["n_cases"] == n
    assert (out / "val_beta0.0" / "per_case.csv").is_file()
    assert "chosen_beta" in capsys.readouterr().out
    stamp = (out / "shape_prior.pt").stat().st_mtime_ns
    assert sp.main(args) == 0  # same settings: the trained prior is reused
    assert (out / "shape_prior.pt").stat().st_mtime_ns == stamp
    assert sp.main([*args, "--seed", "1"]) == 0  # another seed: trained again
    assert (out / "shape_prior.pt").stat().st_mtime_ns != stamp
    stamp = (out / "shape_prior.pt").stat().st_mtime_ns
    rows = synthetic_manifest.read_text().splitlines()
    synthetic_manifest.write_text("\n".join(r for r in rows if not r.startswith("synth,c0,")) + "\n")
    assert sp.main([*args, "--seed", "1"]) == 0  # the manifest changed in place: trained again
    assert (out / "shape_prior.pt").stat().st_mtime_ns != stamp
    with pytest.raises(SystemExit):
        sp.main([*args[:6], "--betas", "-1"])
    with pytest.raises(SystemExit):
        sp.main([*args, "--select-cases", "0"])
    capsys.readouterr()
    with pytest.raises(SystemExit):  # found before the prior is trained
        sp.main([*args[:-4], "--grid", "48", "--select-cases", "2", "--out", str(tmp_path / "other")])
    assert "not a multiple of the prior's grid 48" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
