"""Demonstration of Label-Agnostic Forgetting (LAF, paper 10): unlearning without labels
against retraining from scratch and fine-tuning, both with labels.

:func:`run` (the arena's demo interface), per dataset and seed: the arena's MLP (two hidden
layers of 256 ReLU units; the encoder is everything but the last linear layer, the head is
that layer) is trained on the training split; then two forgetting tasks, each solved by

- retraining (same initialisation and recipe, remaining data and labels: the gold standard),
- fine-tuning the trained model on the remaining data with labels (``FINETUNE_EPOCHS``),
- LAF (:func:`~losskit.procedures.unlearning.laf_unlearn`) from the remaining and forgotten
  inputs only: no label is passed.

Tasks: one whole class (digit 3; TREC-6 class LOC), and a random 10 % of the training rows.
Scores: accuracy on the forgotten rows, on the remaining rows, on the test split (for class
removal: on the test rows of the other classes, and separately of the forgotten class) and the
membership-inference score (:mod:`losskit.procedures.unlearning_mia`) of the forgotten rows
against test rows of the same distribution (class removal: test rows of the forgotten class;
random removal: the whole test split).

Data: sklearn digits (1,257 / 540, standardised pixels) and TREC-6 questions (frozen
all-MiniLM-L6-v2 embeddings, a random 2,000 of the 5,452 training questions per seed, all 500
test questions). LAF's settings are the reference code's for its MNIST CNN (latent 8, T = 20
for class and 5 for random removal) with learning rates 10x larger (``lr_ue = 5e-4``,
``lr_ra = 1e-3``) and a budget of ``LAF_STEPS`` batches of 32: the forget sets here hold
100-300 rows where the reference's hold thousands, so its 20 epochs would be only ~80 steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from losskit.arena.demos import DemoResult
from losskit.procedures.unlearning import laf_unlearn
from losskit.procedures.unlearning_baselines import (
    finetune_unlearn,
    predict_logits,
    retrain_unlearn,
)
from losskit.procedures.unlearning_mia import membership_inference_score
from losskit.procedures.unlearning_report import markdown, plot, verdicts

NAME = "unlearning"
TITLE = "Label-Agnostic Forgetting: unlearning without labels"
METHODS = ("original", "retrain", "fine-tune", "LAF")
TASKS = ("class", "random")
FORGET_CLASS = {"digits": "3", "trec6": "LOC"}
TREC_TRAIN = 2000
TRAIN = {"epochs": 40, "lr": 1e-3, "batch_size": 64}
FINETUNE_EPOCHS = 5
LAF_STEPS = 200
LAF = {"lr_ue": 5e-4, "lr_ra": 1e-3, "latent_dim": 8, "vae_epochs": 10, "batch_size": 32}
TEMPERATURE = {"class": 20.0, "random": 5.0}
RANDOM_FRACTION = 0.1


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")


def _scores(model: nn.Module, d: dict, forget: torch.Tensor, fc: int, task: str) -> dict:
    """Forget / retain / test accuracy, the forgotten class's test accuracy and the MIA."""
    tr, te = predict_logits(model, d["x_train"]), predict_logits(model, d["x_test"])
    y_tr, y_te = d["y_train"], d["y_test"]
    same = y_te == fc if task == "class" else torch.ones(len(y_te), dtype=torch.bool)
    other = y_te != fc if task == "class" else same
    return {
        "forget": _accuracy(tr[forget], y_tr[forget]),
        "retain": _accuracy(tr[~forget], y_tr[~forget]),
        "test": _accuracy(te[other], y_te[other]),
        "test_forgotten_class": _accuracy(te[same], y_te[same]) if task == "class" else math.nan,
        "mia": membership_inference_score(tr[forget], te[same], seed=0),
    }


def _scores_light(
    model: nn.Module, d: dict, forget: torch.Tensor, fc: int, task: str
) -> tuple[float, float]:
    """Forget and test accuracy only (for LAF's trajectory)."""
    tr = predict_logits(model, d["x_train"][forget])
    te = predict_logits(model, d["x_test"])
    other = d["y_test"] != fc if task == "class" else torch.ones(len(te), dtype=torch.bool)
    return _accuracy(tr, d["y_train"][forget]), _accuracy(te[other], d["y_test"][other])


def settings(quick: bool) -> dict:
    """Training, fine-tuning and LAF settings (``quick``: a few epochs and steps)."""
    return {
        "train": {**TRAIN, "epochs": 3 if quick else TRAIN["epochs"]},
        "finetune_epochs": 1 if quick else FINETUNE_EPOCHS,
        "laf": {**LAF, "vae_epochs": 2 if quick else LAF["vae_epochs"]},
        "laf_steps": 20 if quick else LAF_STEPS,
        "temperature": TEMPERATURE,
    }


def _task(
    d: dict, make: Callable[[], nn.Module], orig: nn.Module, task: str, fc: int, seed: int,
    cfg: dict,
) -> dict:  # fmt: skip
    """Retrain, fine-tune and LAF on one forgetting task; scores and LAF's trajectory."""
    n = len(d["y_train"])
    if task == "class":
        forget = d["y_train"] == fc
    else:
        rows = np.random.default_rng(seed + 7).permutation(n)[: round(RANDOM_FRACTION * n)]
        forget = torch.zeros(n, dtype=torch.bool)
        forget[torch.as_tensor(rows)] = True
    x_r, y_r, x_f = d["x_train"][~forget], d["y_train"][~forget], d["x_train"][forget]
    train = cfg["train"]
    models = {
        "original": orig,
        "retrain": retrain_unlearn(make, x_r, y_r, seed=seed, **train),
        "fine-tune": finetune_unlearn(
            orig, x_r, y_r, epochs=cfg["finetune_epochs"], lr=train["lr"], seed=seed
        ),
    }
    encoder, head = orig[:-1], orig[-1]
    per_epoch = math.ceil(len(x_f) / cfg["laf"]["batch_size"])
    epochs = math.ceil(cfg["laf_steps"] / per_epoch)
    trajectory: dict[str, list[float]] = {"step": [], "forget": [], "test": []}

    def record(epoch: int, enc: nn.Module) -> None:
        s = _scores_light(nn.Sequential(enc, head), d, forget, fc, task)
        trajectory["step"].append(epoch * per_epoch)
        trajectory["forget"].append(s[0])
        trajectory["test"].append(s[1])

    record(0, encoder)
    laf = laf_unlearn(
        encoder, x_r, x_f, epochs=epochs, temperature=cfg["temperature"][task], seed=seed,
        on_epoch=record, **cfg["laf"],
    )  # fmt: skip
    models["LAF"] = nn.Sequential(laf.encoder, head)
    scores = {m: _scores(models[m], d, forget, fc, task) for m in METHODS}
    sizes = {"remain": len(y_r), "forget": len(x_f), "laf_epochs": epochs}
    return {"scores": scores, "trajectory": trajectory, "sizes": sizes}


def _data(ds, seed: int, quick: bool) -> dict:
    """Standardised tensors; TREC-6 keeps a random ``TREC_TRAIN`` training questions."""
    from losskit.arena.models import Standardizer

    x_tr, y_tr = ds.x_train, ds.y_train
    if ds.name == "trec6" or quick:
        keep = 300 if quick else TREC_TRAIN
        rows = np.sort(np.random.default_rng(seed).permutation(len(y_tr))[:keep])
        x_tr, y_tr = x_tr[rows], y_tr[rows]
    std = Standardizer.fit(x_tr)
    return {
        "x_train": std(x_tr),
        "y_train": torch.as_tensor(y_tr),
        "x_test": std(ds.x_test),
        "y_test": torch.as_tensor(ds.y_test),
    }


def _check_data(data_dir: str | None) -> None:
    from losskit.arena.datasets import missing_files

    missing = [str(p) for name in ("digits", "trec6") for p in missing_files(name, data_dir)]
    if missing:
        raise ValueError(f"{NAME} needs missing data files: {', '.join(missing)}")


def run(out_dir: Path, *, seeds: int, quick: bool, data_dir: str | None) -> DemoResult:
    """Original / retrain / fine-tune / LAF on digits and TREC-6, class and random removal;
    see the module docstring."""
    from tqdm.auto import tqdm

    from losskit.arena.datasets import load_dataset
    from losskit.arena.models import build_model

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    _check_data(data_dir)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = settings(quick)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results: dict[str, dict] = {}
    try:
        with tqdm(total=2 * seeds, desc=NAME, unit="seed") as bar:
            for name in FORGET_CLASS:
                ds = load_dataset(name, data_dir, progress=False)
                fc = ds.class_names.index(FORGET_CLASS[name])
                runs: dict[str, list] = {t: [] for t in TASKS}
                for seed in range(seeds):
                    d = _data(ds, seed, quick)

                    def make(ds=ds, d=d) -> nn.Module:
                        return build_model("mlp", d["x_train"].numpy(), ds.num_classes)

                    orig = retrain_unlearn(
                        make, d["x_train"], d["y_train"], seed=seed, **cfg["train"]
                    )
                    for task in TASKS:
                        runs[task].append(_task(d, make, orig, task, fc, seed, cfg))
                    bar.update()
                results[name] = {
                    "runs": runs,
                    "train": len(d["y_train"]),
                    "test": len(d["y_test"]),
                    "forget_class": FORGET_CLASS[name],
                }
    finally:
        torch.set_num_threads(threads)
    plot_name = f"{NAME}_plot.png"
    plot(results, out_dir / plot_name)
    md = markdown(results, settings=cfg, seeds=seeds, quick=quick, plot_name=plot_name)
    data = {
        name: {
            "train": r["train"],
            "test": r["test"],
            "forget_class": r["forget_class"],
            **{task: r["runs"][task] for task in TASKS},
        }
        for name, r in results.items()
    }
    data.update({"seeds": seeds, "quick": quick})
    return DemoResult(NAME, TITLE, (10,), md, verdicts(results), data, time.perf_counter() - start)
