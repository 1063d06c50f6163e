"""Multi-label arena trials: end to end on a synthetic dataset, determinism, the scenario on
the training split only, the objective protocol with masks and input regularisers, the
store / runner / report path and the suite wiring."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import losskit
from losskit._core import registry
from losskit.arena.leaderboard import leaderboards, terminal_table
from losskit.arena.multilabel_trial import label_groups
from losskit.arena.report import build_report
from losskit.arena.runner import run_trials
from losskit.arena.store import ArenaStore
from losskit.arena.trial import Trial, run_trial
from losskit.labels import apply_multilabel_scenario

L = 8


def ml_loader(name: str, data_dir=None, *, progress: bool = True):
    """600 train / 300 test rows, 16 features, 8 labels of decreasing frequency, each label a
    noisy linear threshold of the features (learnable)."""
    if name != "toy_ml":
        raise ValueError(f"name must be 'toy_ml', got {name!r}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((900, 16)).astype(np.float32)
    w = rng.standard_normal((16, L))
    bias = np.linspace(0.3, 2.0, L)  # label 0 frequent, label 7 rare
    y = ((x @ w) / 4 + 0.3 * rng.standard_normal((900, L)) > bias).astype(np.int64)
    return SimpleNamespace(
        name=name, task="multilabel", x_train=x[:600], y_train=y[:600], x_test=x[600:],
        y_test=y[600:], num_classes=L, class_names=[f"l{i}" for i in range(L)], extras={},
    )  # fmt: skip


OPTS = {"dataset_loader": ml_loader}


def _trial(**kw) -> Trial:
    base = dict(dataset="toy_ml", scenario="clean", objective="multilabel_bce", epochs=4)
    return Trial(**{**base, **kw})


def test_end_to_end_metrics_and_curves():
    r = run_trial(_trial(model="mlp", epochs=6, lr=3e-3), **OPTS)
    ds = ml_loader("toy_ml")
    m = r["metrics"]
    expected = {"map", "micro_f1", "macro_f1", "hamming_loss", "jaccard", "head_map",
                "medium_map", "tail_map"}  # fmt: skip
    expected |= {f"{p}@{k}" for p in ("p", "ndcg", "psp", "psndcg") for k in (1, 3, 5)}
    assert set(m) == expected
    prevalence = ds.y_test.mean()
    assert m["map"] > 2 * prevalence  # learns: chance mAP is about the prevalence
    assert r["curves"]["test_map"][-1] == m["map"]  # final epoch, not best
    assert len(r["curves"]["train_loss"]) == 6 and r["curves"]["train_loss"][-1] > 0
    assert r["task"] == "multilabel" and r["noise_rate"] == 0.0 and not r["diverged"]
    assert r["train_class_counts"] == ds.y_train.sum(axis=0).tolist()
    groups = r["label_groups"]
    assert sorted(sum(groups.values(), [])) == list(range(L))
    assert set(groups["head"]) == set(np.argsort(-ds.y_train.sum(axis=0))[:3].tolist())


def test_label_groups_split_into_thirds_by_frequency():
    g = label_groups(np.array([5, 50, 1, 20, 3, 30, 2]))
    assert g["head"].tolist() == [1, 5, 3] and g["medium"].tolist() == [0, 4]
    assert g["tail"].tolist() == [6, 2]


def test_deterministic_and_seed_dependent():
    t = _trial(scenario="partial:0.3", model="mlp", seed=3)
    a, b = run_trial(t, **OPTS), run_trial(t, **OPTS)
    assert a["metrics"] == b["metrics"] and a["curves"] == b["curves"]
    c = run_trial(_trial(scenario="partial:0.3", model="mlp", seed=4), **OPTS)
    assert a["curves"]["train_loss"] != c["curves"]["train_loss"]


def test_scenario_touches_the_training_split_only():
    ds = ml_loader("toy_ml")
    seen = {}

    def spy(spec, y, *, seed):
        seen["y"] = y.copy()
        return apply_multilabel_scenario(spec, y, seed=seed)

    r = run_trial(_trial(scenario="partial:0.6", seed=1), scenario_fn=spy, **OPTS)
    assert np.array_equal(seen["y"], ds.y_train)
    expected = apply_multilabel_scenario("partial:0.6", ds.y_train, seed=1)
    assert r["noise_rate"] == pytest.approx(expected.drop_rate)
    assert r["train_class_counts"] == expected.labels.sum(axis=0).tolist()
    assert r["empty_rows"] == pytest.approx(np.mean(expected.labels.sum(axis=1) == 0))
    # the test split is complete: every test positive is scored (head/tail over its labels)
    assert r["metrics"]["map"] > ds.y_test.mean()


class MaskedProtocolLoss(nn.Module):
    """Fake multi-label objective that records what the loop hands it."""

    last: MaskedProtocolLoss | None = None

    def __init__(self, *, class_counts, label_cooccurrence, num_classes, num_epochs) -> None:
        super().__init__()
        self.context = dict(class_counts=class_counts, label_cooccurrence=label_cooccurrence,
                            num_classes=num_classes, num_epochs=num_epochs)  # fmt: skip
        self.masks: list = []
        self.regularised = 0
        self.epochs: list[int] = []
        MaskedProtocolLoss.last = self

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def forward(self, logits, target, mask=None):
        self.masks.append(None if mask is None else mask.clone())
        known = torch.ones_like(target) if mask is None else mask.float()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (bce * known).sum() / known.sum().clamp_min(1)

    def input_regularizer(self, model, inputs, logits, target, mask):
        self.regularised += 1
        assert torch.equal(model(inputs), logits) and inputs.shape[1] == 16
        return logits.new_zeros(())


def _register(monkeypatch, name, **kw):
    entry = registry.Entry(name=name, kind="loss", family="multilabel", papers=(), summary="", **kw)
    monkeypatch.setitem(registry._ENTRIES, name, entry)


def test_protocol_context_mask_and_regularizer(monkeypatch):
    _register(monkeypatch, "fake_masked", module=MaskedProtocolLoss)
    ds = ml_loader("toy_ml")
    r = run_trial(_trial(objective="fake_masked", scenario="partial_known:0.5", epochs=2), **OPTS)
    loss = MaskedProtocolLoss.last
    observed = apply_multilabel_scenario("partial_known:0.5", ds.y_train, seed=0)
    counts, cooc = loss.context["class_counts"], loss.context["label_cooccurrence"]
    assert counts.dtype == torch.long and counts.tolist() == observed.labels.sum(axis=0).tolist()
    assert cooc.dtype == torch.float32 and torch.equal(cooc, cooc.T)
    assert torch.equal(torch.diagonal(cooc).long(), counts)
    y = torch.as_tensor(observed.labels, dtype=torch.float32)
    assert torch.equal(cooc, y.T @ y)
    assert loss.context["num_classes"] == L and loss.context["num_epochs"] == 2
    assert loss.epochs == [0, 1] and loss.regularised == len(loss.masks) > 0
    masks = torch.cat(loss.masks[: len(loss.masks) // 2])  # epoch 0 sees every row once
    assert masks.dtype == torch.bool and masks.shape == (len(ds.y_train), L)
    assert (~masks).sum() == (~observed.mask).sum()
    assert r["unknown_rate"] == pytest.approx(observed.unknown_rate)
    run_trial(_trial(objective="fake_masked", scenario="partial:0.5", epochs=1), **OPTS)
    assert all(m is None for m in MaskedProtocolLoss.last.masks)  # no mask without unknowns


def test_function_entry_gets_the_mask(monkeypatch):
    calls = []

    def fn(logits, target, *, mask=None, reduction="mean"):
        calls.append(mask is not None)
        return F.binary_cross_entropy_with_logits(logits, target)

    _register(monkeypatch, "fake_fn", function=fn)
    run_trial(_trial(objective="fake_fn", scenario="partial_known:0.3", epochs=1), **OPTS)
    assert calls and all(calls)


def test_unknown_objective_and_divergence(monkeypatch):
    with pytest.raises(ValueError, match="no registered objective"):
        run_trial(_trial(objective="no_such_multilabel_loss"), **OPTS)

    def nan_loss(logits, target, reduction="mean"):
        return logits.sum() * float("nan")

    _register(monkeypatch, "fake_nan_ml", function=nan_loss)
    r = run_trial(_trial(objective="fake_nan_ml", epochs=3), **OPTS)
    assert r["diverged"] and r["diverged_epoch"] == 0 and r["curves"]["train_loss"] == [None]
    assert "map" in r["metrics"]  # training stopped before the step: the model is finite


def test_store_resume_leaderboard_and_report(tmp_path):
    pytest.importorskip("losskit.multilabel.focal")  # registers multilabel_focal
    trials = [_trial(objective=o, scenario=s, seed=k, epochs=2)
              for o in ("multilabel_bce", "multilabel_focal") for s in ("clean", "partial:0.3")
              for k in (0, 1)]  # fmt: skip
    with ArenaStore(tmp_path / "arena.sqlite") as store:
        first = run_trials(trials[:3], store, progress=False, **OPTS)
        again = run_trials(trials, store, progress=False, **OPTS)
        assert (first.ran, again.skipped, again.ran, again.failed) == (3, 3, 5, [])
        records = store.records()
    boards = leaderboards(records)
    assert {(b.dataset, b.scenario, b.task, b.rank_by) for b in boards} == {
        ("toy_ml", "clean", "multilabel", "map"), ("toy_ml", "partial:0.3", "multilabel", "map")
    }  # fmt: skip
    for b in boards:
        maps = [row.mean["map"] for row in b.rows]
        assert maps == sorted(maps, reverse=True) and all(row.n_seeds == 2 for row in b.rows)
    assert "dropped positives" in terminal_table(boards[1]) and "tail mAP" in terminal_table(
        boards[1]
    )
    text = build_report(records, tmp_path, command="test", versions={})
    md = (tmp_path / "results.md").read_text()
    assert "| rank | objective | seeds | map | micro_f1 | macro_f1 | p@1 | head_map |" in md
    assert "toy_ml / partial:0.3 (dropped positives" in md and "multilabel_focal" in text
    html = (tmp_path / "report.html").read_text()
    assert "test mAP against dropped positives" in html


def test_report_keeps_linear_and_mlp_apart(tmp_path):
    records = [
        {"dataset": "toy_ml", "scenario": "clean", "objective": "multilabel_bce", "model": m,
         "task": "multilabel", "noise_rate": 0.0, "metrics": {"map": v, "tail_map": v}}
        for m, v in (("linear", 0.4), ("mlp", 0.6))
    ]  # fmt: skip
    build_report(records, tmp_path, command="test", versions={})
    md = (tmp_path / "results.md").read_text()
    assert "toy_ml (linear) / clean" in md and "toy_ml (mlp) / clean" in md


@pytest.mark.skipif(not os.environ.get("LOSSKIT_DATA"), reason="needs LOSSKIT_DATA")
def test_suite_wiring_on_the_real_data():
    from losskit.arena.cli import build_trials
    from losskit.arena.suites import get_suite

    data = os.environ["LOSSKIT_DATA"]
    suite = get_suite("multilabel").override(
        datasets=["mulan_scene"], objectives=["multilabel_bce"], seeds=2
    )
    trials = build_trials(suite, data)
    assert {t.scenario for t in trials} == {"clean", "partial:0.3", "partial:0.6"}
    assert len(trials) == 6 and {t.batch_size for t in trials} == {64}
    with pytest.raises(ValueError, match="needs a 'multilabel' objective"):
        build_trials(suite.override(objectives=["cross_entropy"]), data)
    with pytest.raises(ValueError, match="unknown multi-label scenario"):
        build_trials(suite.override(scenarios=["symmetric:0.2"]), data)
    assert losskit.get("multilabel_bce").family == "multilabel"
