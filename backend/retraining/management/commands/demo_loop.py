"""``manage.py demo_loop``: the retraining loop on real data (weak champion → new site → rounds of annotation,
training, evaluation and gated promotion); prints the frozen-test Dice per round and writes JSON + a plot."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from retraining import demo


class Command(BaseCommand):
    help = "Run the retraining loop on ../shared/data/cxr through the platform's services (CPU)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--per-round", type=int, default=60, help="new paediatric patients per round")
        parser.add_argument("--test-pool", type=int, default=80, help="paediatric patients frozen as the test split")
        parser.add_argument("--adult", type=int, default=40, help="adult images of the weak champion")
        parser.add_argument("--size", type=int, default=128, help="model input size (px)")
        parser.add_argument("--epochs", type=int, default=8)
        parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock budget per training run")
        parser.add_argument("--out", type=Path, default=Path("runs/demo_loop"))

    def handle(self, *args: Any, **options: Any) -> None:
        from config.celery import app

        app.conf.CELERY_TASK_ALWAYS_EAGER = True  # proposals and training run in this process
        overrides = {
            "data": {"size": options["size"], "val_max_cases": 100},
            "model": {"architecture": "resunet", "network_kwargs": {
                "channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1, "norm": "instance",
                "dropout": 0.0}},
            "train": {"epochs": options["epochs"], "max_minutes": options["minutes"], "batch_size": 8,
                      "num_threads": 2, "amp": False, "warmup_epochs": 0, "early_stopping_patience": 5,
                      "log_every": 10},
        }
        try:
            results = demo.run(options["rounds"], options["per_round"], options["test_pool"], options["adult"],
                               overrides, say=self.stdout.write)
        except demo.DemoError as exc:
            raise CommandError(str(exc)) from exc
        out: Path = options["out"]
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
        self._plot(results, out / "dice_per_round.png")
        self.stdout.write("round  labelled  champion Dice [95 % CI]  gate")
        for r in results:
            ci = f"[{r.dice_ci[0]:.4f}, {r.dice_ci[1]:.4f}]" if len(r.dice_ci) == 2 else ""
            verdict = "" if r.promoted is None else ("promoted" if r.promoted else f"refused: {r.reason}")
            self.stdout.write(f"{r.round:>5}  {r.labelled:>8}  {r.dice_mean:.4f} {ci}  {verdict}")
        self.stdout.write(f"wrote {out / 'results.json'} and {out / 'dice_per_round.png'}")

    @staticmethod
    def _plot(results: list[demo.RoundResult], path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        xs = [r.round for r in results]
        means = [r.dice_mean for r in results]
        low = [m - r.dice_ci[0] if len(r.dice_ci) == 2 else 0 for m, r in zip(means, results)]
        high = [r.dice_ci[1] - m if len(r.dice_ci) == 2 else 0 for m, r in zip(means, results)]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=4)
        for r in results:
            if r.promoted is not None:
                ax.annotate("promoted" if r.promoted else "refused", (r.round, r.dice_mean),
                            textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
        ax.set_xlabel("round")
        ax.set_ylabel("champion Dice on the frozen test split (95 % CI)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
