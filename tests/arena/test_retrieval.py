"""The retrieval suite: specs, P x K batches, the objective adapter (label, pair, classifier,
module-with-parameters, regulariser forms), trials on an injected toy dataset, the
imbalanced-regression (ConR) track, the report sections, and a tiny sweep through the CLI
(Olivetti needs ``$LOSSKIT_DATA``; the regression track needs no data)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import losskit
from losskit._core import registry
from losskit.arena import imbalanced_regression as reg
from losskit.arena.retrieval import (
    RetrievalObjective,
    class_batches,
    retrieval_data,
    run_retrieval_trial,
)
from losskit.arena.retrieval_report import regression_table, retrieval_sections
from losskit.arena.retrieval_specs import (
    canonical_retrieval_dataset,
    canonical_retrieval_split,
    check_retrieval_objective,
    objective_form,
)
from losskit.arena.trial import Trial, run_trial
from losskit.cli import main
from losskit.embedding.supcon import supcon_loss
from losskit.embedding.tcm import tcm_loss


def toy_loader(name: str, data_dir=None, *, progress: bool = True):
    """Eight Gaussian blobs in 12 dimensions, 240 train / 160 test rows (any base name)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 400)
    x = (rng.standard_normal((8, 12))[y] * 2 + rng.standard_normal((400, 12))).astype(np.float32)
    return SimpleNamespace(name=name, task="multiclass", x_train=x[:240], y_train=y[:240],
                           x_test=x[240:], y_test=y[240:], num_classes=8,
                           class_names=[str(i) for i in range(8)], extras={})  # fmt: skip


def _trial(objective="supcon", params=None, scenario="all", **kw) -> Trial:
    fields = {"model": "mlp", "seed": 0, "epochs": 2, "batch_size": 32, "lr": 1e-3, **kw}
    return Trial("retrieval:olivetti:dim=16,query=0,train=0", scenario, objective,
                 params or {}, **fields)  # fmt: skip


def test_specs_are_canonical_and_checked():
    assert canonical_retrieval_dataset("retrieval:cifar10:train=5000") == (
        "retrieval:cifar10:dim=128,query=0,train=5000"
    )
    assert canonical_retrieval_split(" disjoint:12 ") == "disjoint:12"
    assert canonical_retrieval_split("all") == "all"
    for bad in ("retrieval:imagenet", "retrieval:trec6:dim=1", "retrieval:trec6:width=3",
                "retrieval", "retrieval:trec6:dim=-4"):  # fmt: skip
        with pytest.raises(ValueError, match="dataset spec"):
            canonical_retrieval_dataset(bad)
    for bad in ("clean", "disjoint:1", "disjoint:x", "all:3"):
        with pytest.raises(ValueError, match="scenario"):
            canonical_retrieval_split(bad)
    assert reg.canonical_regression_scenario("longtail:100.0") == "longtail:100"
    with pytest.raises(ValueError, match="scenario"):
        reg.canonical_regression_scenario("longtail:0.5")
    with pytest.raises(ValueError, match="dataset spec"):
        reg.canonical_regression_dataset("regression:diabetes")


@pytest.mark.parametrize(("n_classes", "batch", "p", "k"), [(3, 30, 3, 10), (20, 32, 8, 4)])
def test_class_batches_are_p_by_k(n_classes, batch, p, k):
    labels = np.repeat(np.arange(n_classes), 6)
    labels[:1] = 0  # class sizes differ little; class 0 keeps 6 rows
    batches = list(class_batches(labels, batch, np.random.default_rng(0)))
    assert len(batches) == -(-len(labels) // batch)
    for rows, kk in batches:
        assert kk == k and len(rows) == p * k
        groups = labels[rows].reshape(p, k)
        assert (groups == groups[:, :1]).all()  # one class per group
        assert len(np.unique(groups[:, 0])) == p  # distinct classes
        if k <= 6:  # enough rows: drawn without replacement
            assert all(len(np.unique(g)) == k for g in rows.reshape(p, k))


def test_objective_forms_and_errors():
    assert objective_form("supcon") == "labels"
    assert objective_form("focal_info_nce") == "pairs"
    assert objective_form("cross_entropy") == "classifier"
    with pytest.raises(ValueError, match="retrieval track takes embedding"):
        objective_form("conr")
    with pytest.raises(ValueError, match="reg_weight"):
        check_retrieval_objective("tcm", {"base_loss": "supcon", "reg_weight": -1})
    with pytest.raises(ValueError, match="no registered objective"):
        check_retrieval_objective("tcm", {"base_loss": "not_a_loss"})


def _ctx(c=4, d=6):
    return {"num_classes": c, "in_features": d, "embedding_dim": d, "num_samples": 40,
            "class_counts": torch.full((c,), 10), "num_epochs": 3}  # fmt: skip


def test_objective_adapter_forms():
    torch.manual_seed(0)
    emb, y, idx = torch.randn(12, 6), torch.arange(4).repeat_interleave(3), torch.arange(12)
    # label form is the loss itself; a regulariser is base + reg_weight * loss
    assert torch.equal(
        RetrievalObjective("supcon", {}, _ctx())(emb, y, idx, 3), supcon_loss(emb, y)
    )
    both = RetrievalObjective("tcm", {"base_loss": "supcon", "reg_weight": 0.5}, _ctx())
    want = supcon_loss(emb, y) + 0.5 * tcm_loss(emb, y)
    assert torch.allclose(both(emb, y, idx, 3), want)
    # pair form: query = first row of each class group, key = second row
    pairs = RetrievalObjective("focal_info_nce", {}, _ctx())
    entry = losskit.get("focal_info_nce")
    want = entry.function(emb[0::3], emb[1::3], **entry.defaults)
    assert torch.allclose(pairs(emb, y, idx, 3), want)
    # classifier form: a trained linear head on the embedding
    ce = RetrievalObjective("cross_entropy", {}, _ctx())
    assert ce.head is not None and ce.head.weight.shape == (4, 6)
    assert torch.allclose(ce(emb, y, idx, 3), F.cross_entropy(ce.head(emb), y))


class _Proxies(nn.Module):
    """A loss with its own parameters: cross-entropy against learnable class proxies."""

    def __init__(self, num_classes: int, in_features: int, scale: float = 4.0) -> None:
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(num_classes, in_features))
        self.scale = scale

    def forward(self, embeddings, labels):
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.proxies, dim=1).T
        return F.cross_entropy(self.scale * cos, labels)


def test_a_loss_module_with_parameters_gets_its_sizes_and_trains(monkeypatch):
    entry = registry.Entry("toy_proxies", "loss", "embedding", (), "test", {}, None, _Proxies)
    monkeypatch.setitem(registry._ENTRIES, "toy_proxies", entry)
    obj = RetrievalObjective("toy_proxies", {"scale": 2.0}, _ctx(c=5, d=6))
    (proxies,) = list(obj.parameters())
    assert proxies.shape == (5, 6) and obj.loss.loss.scale == 2.0
    out = run_retrieval_trial(_trial("toy_proxies"), dataset_loader=toy_loader)
    assert np.isfinite(out["metrics"]["map@r"])


def test_retrieval_data_protocols():
    d = retrieval_data("retrieval:olivetti", "all", dataset_loader=toy_loader)
    assert len(d.y_train) == 240 and len(d.y_query) == 160 and d.num_classes == 8
    d = retrieval_data("retrieval:olivetti:train=100,query=50", "disjoint:3",
                       dataset_loader=toy_loader)  # fmt: skip
    assert len(d.y_train) == 100 and len(d.y_query) == 50
    assert d.num_classes == 5 and set(d.y_train) == set(range(5))
    assert len(np.unique(d.y_query)) == 3
    with pytest.raises(ValueError, match="hold out"):
        retrieval_data("retrieval:olivetti", "disjoint:7", dataset_loader=toy_loader)


def test_goemotions_keeps_single_label_rows():
    def multilabel(name, data_dir=None, *, progress=True):
        y = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [0, 1, 0]] * 5, dtype=np.int64)
        x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
        return SimpleNamespace(name=name, task="multilabel", x_train=x, y_train=y,
                               x_test=x, y_test=y, num_classes=3, class_names=list("abc"),
                               extras={})  # fmt: skip

    d = retrieval_data("retrieval:goemotions", "all", dataset_loader=multilabel)
    assert len(d.y_train) == 15 and sorted(set(d.y_query)) == [0, 1, 2]


def test_trial_is_deterministic_and_reports_metrics():
    a = run_trial(_trial("multi_similarity"), dataset_loader=toy_loader)
    b = run_trial(_trial("multi_similarity"), dataset_loader=toy_loader)
    assert a["metrics"] == b["metrics"] and a["task"] == "retrieval"
    assert set(a["metrics"]) >= {"recall@1", "recall@5", "map@r", "nmi"}
    assert all(0.0 <= a["metrics"][m] <= 1.0 for m in ("recall@1", "recall@5", "map@r", "nmi"))
    assert a["input_metrics"] is not None and len(a["curves"]["train_loss"]) == 2
    c = run_trial(_trial("multi_similarity", seed=1), dataset_loader=toy_loader)
    assert c["metrics"] != a["metrics"]


def test_training_improves_retrieval_on_the_toy_data():
    short = run_trial(_trial("supcon", epochs=1, lr=1e-4), dataset_loader=toy_loader)
    long = run_trial(_trial("supcon", epochs=15, lr=3e-3), dataset_loader=toy_loader)
    assert long["metrics"]["map@r"] > short["metrics"]["map@r"]


def test_housing_data_and_long_tail_split():
    x, y = reg.make_housing()
    assert x.shape == (reg.POOL, 8) and x.dtype == np.float32 and np.isfinite(x).all()
    assert y.min() > 0 and y.max() < reg.TOP
    train, test, counts = reg.longtail_split(y, 100.0)
    assert counts[0] == reg.HEAD_COUNT and counts[-1] == reg.HEAD_COUNT // 100
    assert not set(train) & set(test) and len(train) == counts.sum()
    bins = np.minimum((y / (reg.TOP / reg.BINS)).astype(int), reg.BINS - 1)
    assert (np.bincount(bins[test], minlength=reg.BINS) == reg.TEST_PER_BIN).all()
    assert (np.bincount(bins[train], minlength=reg.BINS) == counts).all()


def test_regression_metrics_groups():
    counts = np.array([200] * 5 + [50] * 5 + [10] * 10)  # many, medium, few bins
    y = (np.arange(20) + 0.5) * reg.TOP / reg.BINS
    pred = y + np.where(np.arange(20) < 5, 0.1, np.where(np.arange(20) < 10, 0.2, 0.4))
    m = reg.regression_metrics(pred, y, counts)
    assert m["mae_many"] == pytest.approx(0.1) and m["mae_medium"] == pytest.approx(0.2)
    assert m["mae_few"] == pytest.approx(0.4) and m["mae"] == pytest.approx((0.5 + 1 + 4) / 20)
    assert m["gm"] == pytest.approx(np.exp(np.mean(np.log(np.abs(pred - y)))))


def test_regression_objectives():
    z, pred, y = torch.randn(8, 5), torch.randn(8), torch.randn(8)
    assert torch.equal(reg.RegressionObjective("mse", {})(z, pred, y), F.mse_loss(pred, y))
    conr = losskit.get("conr").function
    obj = reg.RegressionObjective("conr", {"reg_weight": 2, "beta": 0.0})
    assert torch.allclose(obj(z, pred, y), F.l1_loss(pred, y) + 2 * conr(z, pred, y, beta=0.0))
    with pytest.raises(ValueError, match="base_loss"):
        reg.check_regression_objective("conr", {"base_loss": "huber"})
    with pytest.raises(ValueError, match="takes no parameters"):
        reg.check_regression_objective("l1", {"beta": 1})
    with pytest.raises(ValueError, match="regression track takes"):
        reg.check_regression_objective("supcon", {})


def test_regression_trial_is_deterministic():
    t = Trial("regression:housing", "longtail:100", "conr", {"reg_weight": 1}, "mlp", 0, 2, 256)
    a, b = run_trial(t), run_trial(t)
    assert a["metrics"] == b["metrics"] and a["task"] == "regression"
    assert set(a["metrics"]) == set(reg.METRIC_NAMES) and len(a["curves"]["test_mae"]) == 2
    with pytest.raises(ValueError, match="model 'mlp'"):
        run_trial(Trial("regression:housing", "longtail:100", "l1", {}, "linear", 0, 1))


def test_report_tables_rank_and_reference_row():
    recs = [
        {"dataset": "retrieval:x", "scenario": "all", "model": "mlp", "task": "retrieval",
         "objective": obj, "seed": s, "num_train": 10, "train_classes": 2, "num_query": 5,
         "query_classes": 2, "input_metrics": {"recall@1": 0.5, "recall@5": 0.6, "map@r": 0.1,
                                                "nmi": 0.2},
         "metrics": {"recall@1": v, "recall@5": v, "map@r": v + 0.01 * s, "nmi": v}}
        for obj, v in (("a", 0.4), ("b", 0.8)) for s in range(2)
    ] + [
        {"dataset": "regression:housing", "scenario": "longtail:100", "model": "mlp",
         "task": "regression", "objective": obj, "seed": 0, "num_train": 3, "num_test": 2,
         "metrics": dict.fromkeys(reg.METRIC_NAMES, v)}
        for obj, v in (("l1", 0.5), ("conr", 0.4))
    ]  # fmt: skip
    (t1, table1), (t2, table2) = retrieval_sections(recs)
    assert "retrieval:x / all" in t1 and "regression:housing" in t2
    lines = table1.splitlines()
    assert lines[2].startswith("| 1 | `b` | 2 | 80.0 ± 0.0") and "80.5 ± 0.7" in lines[2]
    assert lines[3].startswith("| 2 | `a`") and "(input features, untrained)" in lines[4]
    assert regression_table(recs[4:]).splitlines()[2].startswith("| 1 | `conr` | 1 | 0.400")


@pytest.mark.skipif(not os.environ.get("LOSSKIT_DATA"), reason="needs LOSSKIT_DATA")
def test_tiny_sweep_through_the_cli(tmp_path, capsys):
    """Olivetti (2 objectives) and the ConR track (2 objectives), 2 epochs, through
    ``losskit arena --suite retrieval``, then ``losskit arena report``."""
    if not Path(os.environ["LOSSKIT_DATA"], "olivetti").is_dir():
        pytest.skip("LOSSKIT_DATA lacks olivetti/")
    out = str(tmp_path / "run")
    base = ["arena", "--suite", "retrieval", "--epochs", "2", "--no-progress", "--out", out]
    assert main([*base, "--datasets", "retrieval:olivetti", "--seeds", "1",
                 "--objectives", "supcon", "cross_entropy"]) == 0  # fmt: skip
    assert main([*base, "--datasets", "regression:housing", "--seeds", "2", "--objectives",
                 "l1", "conr:base_loss=l1,reg_weight=4"]) == 0  # fmt: skip
    capsys.readouterr()
    (Path(out) / "results.md").unlink()
    assert main(["arena", "report", "--out", out]) == 0
    md = (Path(out) / "results.md").read_text()
    assert "## Retrieval and imbalanced regression" in md
    assert "retrieval:olivetti:dim=128,query=0,train=0 / disjoint:12" in md
    assert "`supcon`" in md and "`cross_entropy`" in md and "(input features, untrained)" in md
    assert "regression:housing / longtail:100" in md and "`conr:base_loss=l1,reg_weight=4`" in md
    assert "Retrieval and imbalanced regression" in (Path(out) / "report.html").read_text()
    with pytest.raises(ValueError, match="retrieval track takes embedding"):
        main([*base, "--datasets", "retrieval:olivetti", "--objectives", "conr"])
