"""run_trial and run_trials: determinism, resume, failures, pool and Ray backends, the
objective adapter protocol and the models.

The dataset and the scenarios are small fakes (sklearn digits, a seeded symmetric noise and
a subsampled long tail) injected through ``dataset_loader`` / ``scenario_fn`` / ``groups_fn``,
so these tests do not depend on ``losskit.arena.datasets`` or ``losskit.labels``.
"""

from __future__ import annotations

from types import MappingProxyType, SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losskit._core import registry
from losskit.arena.models import SmallCNN, Standardizer, build_model
from losskit.arena.runner import run_trials
from losskit.arena.store import ArenaStore
from losskit.arena.trial import Trial, run_trial


def fake_loader(name: str, data_dir=None, *, progress: bool = True):
    """sklearn digits as a Dataset-like record (70/30 split, fixed permutation)."""
    from sklearn.datasets import load_digits

    if name != "digits":
        raise ValueError(f"name must be 'digits', got {name!r}")
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))
    x, y = (x[perm] / 16.0).astype(np.float32), y[perm].astype(np.int64)
    cut = int(0.7 * len(y))
    return SimpleNamespace(
        name=name, task="multiclass", x_train=x[:cut], y_train=y[:cut], x_test=x[cut:],
        y_test=y[cut:], num_classes=10, class_names=[str(i) for i in range(10)], extras={},
    )  # fmt: skip


def fake_scenario(spec: str, y, num_classes, *, seed: int, extras=None):
    """ "clean", "sym:<rate>" (uniform flips to another class), "lt" (class k keeps a share
    0.5**k of its samples) or "boom" (raises)."""
    rng = np.random.default_rng(seed)
    index = np.arange(len(y))
    if spec == "boom":
        raise RuntimeError("scenario exploded")
    if spec == "lt":
        keep = [np.flatnonzero(y == k)[: max(2, int((y == k).sum() * 0.5**k))] for k in range(10)]
        index = np.sort(np.concatenate(keep))
    labels = y[index].copy()
    if spec.startswith("sym:"):
        flip = rng.random(len(labels)) < float(spec[4:])
        shift = rng.integers(1, num_classes, size=len(labels))
        labels[flip] = (labels[flip] + shift[flip]) % num_classes
    return SimpleNamespace(index=index, labels=labels, clean=y[index].copy())


def fake_groups(counts):
    order = np.argsort(-counts)
    return {"head": order[:3], "medium": order[3:7], "tail": order[7:]}


FAKES = {"dataset_loader": fake_loader, "scenario_fn": fake_scenario, "groups_fn": fake_groups}


def _trials(n: int, **kw) -> list[Trial]:
    base = dict(dataset="digits", scenario="clean", objective="cross_entropy", epochs=2)
    return [Trial(**{**base, "seed": s, **kw}) for s in range(n)]


def _same(a: dict, b: dict) -> None:
    for k in ("metrics", "per_class_accuracy", "reliability", "curves", "noise_rate"):
        assert a[k] == b[k], k


def test_same_seed_same_result_and_other_seed_differs():
    t = Trial("digits", "sym:0.3", "cross_entropy", model="mlp", epochs=3, seed=5)
    a, b = run_trial(t, **FAKES), run_trial(t, **FAKES)
    _same(a, b)
    c = run_trial(Trial("digits", "sym:0.3", "cross_entropy", model="mlp", epochs=3), **FAKES)
    assert a["curves"]["train_loss"] != c["curves"]["train_loss"]


def test_result_contents():
    t = Trial("digits", "sym:0.3", "focal", params={"gamma": 1.0}, model="mlp", epochs=4)
    r = run_trial(t, **FAKES)
    ds = fake_loader("digits")
    m = r["metrics"]
    assert set(m) == {"accuracy", "macro_f1", "balanced_accuracy", "ece"}
    assert m["accuracy"] > 0.5  # learns through 30 % noise
    assert r["curves"]["test_accuracy"][-1] == m["accuracy"]  # final epoch, not best
    assert len(r["curves"]["train_loss"]) == len(r["curves"]["test_accuracy"]) == 4
    assert abs(r["noise_rate"] - 0.3) < 0.05
    assert r["num_train"] == len(ds.y_train) and r["class_groups"] is None
    assert len(r["per_class_accuracy"]) == 10
    rel = r["reliability"]
    assert len(rel["count"]) == 15 and sum(rel["count"]) == len(ds.y_test)
    assert set(r["versions"]) == {"losskit", "torch", "numpy", "python"}
    assert r["wall_time"] > 0 and not r["diverged"]


def test_long_tail_adds_group_accuracies():
    r = run_trial(Trial("digits", "lt", "cross_entropy", epochs=2), **FAKES)
    assert {"head_accuracy", "medium_accuracy", "tail_accuracy"} <= set(r["metrics"])
    counts = np.asarray(r["train_class_counts"])
    assert r["imbalance_ratio"] == counts.max() / counts.min()
    assert r["class_groups"]["head"] == fake_groups(counts)["head"].tolist()
    forced = run_trial(Trial("digits", "clean", "cross_entropy", epochs=1), long_tail=True, **FAKES)
    assert "tail_accuracy" in forced["metrics"]


class ProtocolLoss(nn.Module):
    """Fake objective using every hook of the adapter protocol."""

    needs_index = True
    last: ProtocolLoss | None = None

    def __init__(self, *, class_counts, num_samples, scale: float = 1.0, **kwargs) -> None:
        super().__init__()
        self.class_counts, self.num_samples, self.scale, self.kwargs = (
            class_counts, num_samples, scale, kwargs,
        )  # fmt: skip
        self.shift = nn.Parameter(torch.zeros(()))
        self.epochs: list[int] = []
        self.seen: set[int] = set()
        ProtocolLoss.last = self

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def forward(self, logits, target, index):
        self.seen.update(index.tolist())
        return self.scale * F.cross_entropy(logits, target) + (self.shift - 1.0) ** 2


class IndexByName(nn.Module):
    """Declares nothing, but its forward names ``index``."""

    seen: set[int] = set()

    def forward(self, logits, target, index):
        IndexByName.seen.update(index.tolist())
        return F.cross_entropy(logits, target)


def _function_loss(logits, target, *, num_classes, power=1.0, reduction="mean"):
    assert logits.shape[1] == num_classes
    return F.cross_entropy(logits, target) ** power


def _register(monkeypatch, name, **kw):
    entry = registry.Entry(name=name, kind="loss", family="test", papers=(), summary="", **kw)
    monkeypatch.setitem(registry._ENTRIES, name, entry)


def test_adapter_protocol(monkeypatch):
    _register(monkeypatch, "fake_protocol", module=ProtocolLoss, defaults={"scale": 1.0})
    t = Trial("digits", "lt", "fake_protocol", params={"scale": 0.5}, epochs=3)
    r = run_trial(t, **FAKES)
    loss = ProtocolLoss.last
    assert loss.scale == 0.5 and loss.kwargs == {}  # **kwargs receives no context
    assert loss.class_counts.dtype == torch.long
    assert loss.class_counts.tolist() == r["train_class_counts"]
    assert loss.num_samples == r["num_train"]
    assert loss.seen == set(range(r["num_train"]))
    assert loss.epochs == [0, 1, 2]
    assert float(loss.shift.detach()) > 0.0  # its parameter was optimised

    _register(monkeypatch, "fake_index", module=IndexByName)
    by_name = run_trial(Trial("digits", "clean", "fake_index", epochs=1), **FAKES)
    assert IndexByName.seen == set(range(by_name["num_train"]))

    _register(monkeypatch, "fake_function", function=_function_loss, defaults={"power": 2.0})
    ce = run_trial(Trial("digits", "clean", "cross_entropy", epochs=1), **FAKES)
    squared = run_trial(Trial("digits", "clean", "fake_function", epochs=1), **FAKES)
    plain = Trial("digits", "clean", "fake_function", params={"power": 1.0}, epochs=1)
    assert run_trial(plain, **FAKES)["curves"] == ce["curves"]  # power=1 is cross-entropy
    assert squared["curves"] != ce["curves"]  # the default power=2 was applied


def test_diverging_objective_is_recorded(monkeypatch, tmp_path):
    def nan_loss(logits, target, reduction="mean"):
        return F.cross_entropy(logits, target) * float("nan")

    _register(monkeypatch, "fake_nan", function=nan_loss, defaults=MappingProxyType({}))
    t = Trial("digits", "clean", "fake_nan", epochs=3)
    r = run_trial(t, **FAKES)
    assert r["diverged"] and r["diverged_epoch"] == 0
    assert r["curves"]["train_loss"] == [None]
    with ArenaStore(tmp_path / "a.sqlite") as store:
        run_trials([t], store, progress=False, **FAKES)
        assert store.results()[0]["status"] == "diverged"


def test_resume_skips_completed_and_stores_each_key_once(tmp_path, capsys):
    trials = _trials(4)
    with ArenaStore(tmp_path / "arena.sqlite") as store:
        first = run_trials(trials[:2], store, progress=False, **FAKES)  # "interrupted" sweep
        assert (first.ran, first.skipped) == (2, 0)
        again = run_trials(trials + trials[:1], store, progress=True, **FAKES)
        assert "skipping 2 completed trial(s)" in capsys.readouterr().err
        assert (again.total, again.skipped, again.ran, again.failed) == (4, 2, 2, [])
        keys = [r["key"] for r in store.results()]
        assert store.count() == 4 and sorted(keys) == sorted(t.key() for t in trials)
        assert run_trials(trials, store, progress=False, **FAKES).ran == 0


def test_failing_trial_leaves_no_row_and_others_complete(tmp_path):
    good = _trials(2)
    bad = Trial("digits", "boom", "cross_entropy", epochs=1)
    unknown = Trial("digits", "clean", "no_such_objective", epochs=1)
    with ArenaStore(tmp_path / "a.sqlite") as store:
        summary = run_trials([good[0], bad, unknown, good[1]], store, progress=True, **FAKES)
        assert summary.ran == 2
        assert {k for k, _ in summary.failed} == {bad.key(), unknown.key()}
        assert any("scenario exploded" in e for _, e in summary.failed)
        assert store.completed_keys() == {t.key() for t in good}


def test_bad_runner_arguments(tmp_path):
    with ArenaStore(tmp_path / "a.sqlite") as store:
        with pytest.raises(ValueError, match="backend"):
            run_trials([], store, backend="dask")
        with pytest.raises(ValueError, match="workers"):
            run_trials([], store, workers=0)
        with pytest.raises(ValueError, match="trials"):
            run_trials(["digits"], store)  # type: ignore[list-item]


def test_process_pool_matches_sequential(tmp_path):
    trials = _trials(3, model="mlp", scenario="sym:0.2")
    with ArenaStore(tmp_path / "seq.sqlite") as seq, ArenaStore(tmp_path / "pool.sqlite") as pool:
        run_trials(trials, seq, workers=1, progress=False, **FAKES)
        summary = run_trials(trials, pool, workers=2, progress=False, **FAKES)
        assert summary.ran == 3 and not summary.failed
        a = {r["key"]: r for r in seq.results()}
        b = {r["key"]: r for r in pool.results()}
        assert a.keys() == b.keys()
        for k in a:
            assert a[k]["result"]["metrics"] == b[k]["result"]["metrics"]
            assert a[k]["curves"] == b[k]["curves"]


def test_models_shapes_and_standardizer():
    x = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    std = Standardizer.fit(x)
    batch = std(x)
    assert batch.shape == (6, 3, 32, 32)
    torch.testing.assert_close(batch.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    cnn = build_model("cnn", x, 10)
    assert isinstance(cnn, SmallCNN) and cnn(batch).shape == (6, 10)
    assert sum(p.numel() for p in cnn.parameters()) < 200_000
    assert build_model("linear", x, 10)(batch).shape == (6, 10)
    feats = np.ones((5, 4), dtype=np.float32)
    assert torch.equal(Standardizer.fit(feats)(feats), torch.zeros(5, 4))  # constant columns
    assert build_model("mlp", feats, 3)(torch.zeros(2, 4)).shape == (2, 3)
    with pytest.raises(ValueError, match="cnn"):
        build_model("cnn", feats, 10)
    with pytest.raises(ValueError, match="model"):
        build_model("resnet", feats, 10)


def image_loader(name: str, data_dir=None, *, progress: bool = True):
    """Random 32x32x3 uint8 images whose class shifts the red channel (learnable)."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=160).astype(np.int64)
    x = rng.integers(0, 128, size=(160, 32, 32, 3)).astype(np.uint8)
    x[..., 0] += (60 * y).astype(np.uint8)[:, None, None]
    return SimpleNamespace(
        name=name, task="multiclass", x_train=x[:120], y_train=y[:120], x_test=x[120:],
        y_test=y[120:], num_classes=3, class_names=["a", "b", "c"], extras={},
    )  # fmt: skip


def test_cnn_trial_is_deterministic_and_learns():
    t = Trial("images", "clean", "cross_entropy", model="cnn", epochs=3, batch_size=32, lr=1e-2)
    opts = {"dataset_loader": image_loader, "scenario_fn": fake_scenario}
    a, b = run_trial(t, **opts), run_trial(t, **opts)
    _same(a, b)
    assert a["metrics"]["accuracy"] > 0.5  # chance is 1/3
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the trial runs on one thread whatever the caller's setting
    try:
        _same(a, run_trial(t, **opts))
        assert torch.get_num_threads() == 2  # and restores the caller's setting
    finally:
        torch.set_num_threads(before)
