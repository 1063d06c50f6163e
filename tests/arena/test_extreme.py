"""The synthetic extreme track on tiny sizes: specs, data, the exact chunked evaluation,
in-batch shortlists, training with random / NGAME batching, the store, the report and the
CLI."""

from __future__ import annotations

import pytest
import torch

from losskit.arena.extreme import (
    DualEncoder,
    _schedule,
    batch_target,
    evaluate,
    make_extreme_data,
    run_extreme_trial,
    shortlist,
)
from losskit.arena.extreme_specs import (
    canonical_batching,
    canonical_extreme_dataset,
    is_extreme_dataset,
    parse_batching,
    parse_extreme_dataset,
)
from losskit.arena.leaderboard import extreme_table
from losskit.arena.report import build_report
from losskit.arena.runner import run_trials
from losskit.arena.store import ArenaStore
from losskit.arena.trial import Trial, run_trial
from losskit.cli import main
from losskit.diagnostics.multilabel import ndcg_at_k, precision_at_k

pytest.importorskip("losskit.multilabel.decoupled_softmax")  # registers decoupled_softmax

TINY = "synthetic_xc:labels=300,train=600,test=200,dim=16"


def _trial(scenario: str = "random:all", **kw) -> Trial:
    base = dict(objective="decoupled_softmax", epochs=4, batch_size=64, lr=3e-2)
    return Trial(canonical_extreme_dataset(TINY), canonical_batching(scenario), **{**base, **kw})


def test_specs_spell_every_field_and_reject_bad_ones():
    spec = canonical_extreme_dataset("synthetic_xc:labels=2000 , train=3e3")
    assert spec == "synthetic_xc:labels=2000,train=3000,test=2000,dim=64,zipf=1,sigma=0.5,seed=0"
    assert parse_extreme_dataset(spec)["train"] == 3000 and is_extreme_dataset(spec)
    assert not is_extreme_dataset("goemotions")
    assert canonical_batching("ngame") == "ngame:inbatch:cluster=32,refresh=1,warmup=1"
    assert canonical_batching("random") == "random:all"
    assert parse_batching("ngame:all:cluster=8")[2]["cluster"] == 8
    for bad in ("synthetic:labels=10", "synthetic_xc:labels=10", "synthetic_xc:labels=2.5",
                "synthetic_xc:size=3", "synthetic_xc:labels", "synthetic_xc:zipf=-1"):  # fmt: skip
        with pytest.raises(ValueError, match="spec"):
            parse_extreme_dataset(bad)
    for bad in ("shuffle:all", "random:hard", "random:all:cluster=4", "ngame:inbatch:size=4",
                "ngame:inbatch:cluster=0"):  # fmt: skip
        with pytest.raises(ValueError, match="scenario"):
            parse_batching(bad)


def test_data_is_a_function_of_the_spec():
    a, b = make_extreme_data(TINY), make_extreme_data(TINY)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.pos_test, b.pos_test)
    other = make_extreme_data(TINY + ",seed=1")
    assert not torch.equal(a.x_train, other.x_train)
    assert a.x_train.shape == (600, 16) and a.pos_test.shape == (200, 10)
    pos = torch.cat([a.pos_train, a.pos_test])
    sizes = (pos >= 0).sum(dim=1)
    assert set(sizes.tolist()) == set(range(1, 11))  # 1..10 positives per query
    assert all(len(set(r[r >= 0].tolist())) == int((r >= 0).sum()) for r in pos)  # distinct
    assert ((pos >= 0) == (torch.arange(10) < sizes[:, None])).all()  # padded at the end
    counts = torch.bincount(pos[pos >= 0], minlength=300)
    assert counts[:30].sum() > counts[-30:].sum()  # Zipf popularity: head labels first
    assert torch.allclose(a.label_emb.norm(dim=1), torch.ones(300))


def test_inputs_need_a_trained_tower():
    """A linear map (the least-squares one) recovers the direction of the positives' sum far
    better than the raw distorted input does."""
    d = make_extreme_data(TINY)
    target = torch.zeros(600, 16)
    for j in range(10):
        ok = d.pos_train[:, j] >= 0
        target[ok] += d.label_emb[d.pos_train[ok, j]]
    target = torch.nn.functional.normalize(target, dim=1)
    raw = torch.nn.functional.cosine_similarity(d.x_train, target).mean()
    w = torch.linalg.lstsq(d.x_train, target).solution
    fitted = torch.nn.functional.cosine_similarity(d.x_train @ w, target).mean()
    assert fitted > 0.8 and raw < 0.5


def test_shortlist_and_dense_targets_agree():
    pos = torch.tensor([[4, 1, -1], [1, 7, 9], [2, -1, -1]])
    labels, target = shortlist(pos)
    assert labels.tolist() == [1, 2, 4, 7, 9]
    dense = batch_target(pos, 10)
    assert torch.equal(dense[:, labels], target) and dense.sum() == target.sum() == 6


def test_chunked_evaluation_equals_the_dense_metrics():
    d = make_extreme_data("synthetic_xc:labels=300,train=10,test=600,dim=16")
    torch.manual_seed(0)
    model = DualEncoder("linear", 16, 300, 0.05)
    with torch.no_grad():  # a half-trained state: true embeddings for half of the labels
        model.tower.weight.copy_(torch.linalg.lstsq(d.x_test, d.x_test).solution.T)
        model.labels[:150] = d.label_emb[:150] * 3.0
    ours = evaluate(model, d.x_test, d.pos_test)
    with torch.no_grad():
        s = model.scores(model.queries(d.x_test)).numpy()
    t = batch_target(d.pos_test, 300).numpy()
    assert ours["p@1"] == pytest.approx(precision_at_k(s, t, 1), abs=1e-12)
    assert ours["p@5"] == pytest.approx(precision_at_k(s, t, 5), abs=1e-12)
    assert ours["ndcg@5"] == pytest.approx(ndcg_at_k(s, t, 5), abs=1e-12)
    assert 0 < ours["p@5"] < 1


def test_compressed_ngame_curriculum():
    s = _schedule({"cluster": 8, "refresh": 1, "warmup": 1})
    assert [s.should_refresh(e) for e in range(4)] == [False, True, True, True]
    assert [s.cluster_size(e) for e in range(1, 6)] == [2, 4, 8, 8, 8]


@pytest.mark.parametrize("scenario", ["random:all", "random:inbatch", "ngame:inbatch:cluster=8"])
def test_trial_learns_is_deterministic_and_reports(scenario):
    t = _trial(scenario)
    a = run_trial(t)
    b = run_extreme_trial(t)
    assert a["metrics"] == b["metrics"] and a["curves"] == b["curves"]
    chance = 5.5 / 300  # mean positives per query over the labels
    assert a["metrics"]["p@1"] > 10 * chance and set(a["metrics"]) == {"p@1", "p@5", "ndcg@5"}
    assert a["curves"]["test_p@1"][-1] == a["metrics"]["p@1"] and len(a["epoch_times"]) == 4
    assert a["epoch_time"] > 0 and a["task"] == "extreme" and not a["diverged"]
    other = run_trial(_trial(scenario, seed=1))
    assert other["curves"]["train_loss"] != a["curves"]["train_loss"]


def test_bad_tower_and_unknown_objective():
    with pytest.raises(ValueError, match="query tower"):
        run_trial(_trial(model="cnn"))
    with pytest.raises(ValueError, match="no registered objective"):
        run_trial(_trial(objective="no_such_xc_loss"))


def test_store_resume_and_report(tmp_path):
    trials = [_trial(sc, seed=k, epochs=2) for sc in ("random:all", "ngame:inbatch:cluster=8")
              for k in (0, 1)]  # fmt: skip
    with ArenaStore(tmp_path / "arena.sqlite") as store:
        assert run_trials(trials[:1], store, progress=False).ran == 1
        again = run_trials(trials, store, progress=False)
        assert (again.skipped, again.ran, again.failed) == (1, 3, [])
        records = store.records()
    table = extreme_table(records)
    assert table.count("`decoupled_softmax`") == 2 and "L=300, 600 train queries" in table
    assert "| 2 |" in table  # two seeds per row
    build_report(records, tmp_path, command="test", versions={})
    md = (tmp_path / "results.md").read_text()
    assert "## Synthetic extreme classification" in md and "ngame:inbatch:cluster=8" in md
    assert "Synthetic extreme" in (tmp_path / "report.html").read_text()


def test_cli_runs_the_track_and_resumes(tmp_path, capsys):
    args = ["arena", "--suite", "extreme_quick", "--datasets", TINY, "--scenarios",
            "random:all", "ngame:inbatch:cluster=8", "--objectives", "decoupled_softmax",
            "--epochs", "1", "--seeds", "1", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "2 trials: 2 ran" in capsys.readouterr().err
    assert main(args) == 0
    assert "2 trials: 0 ran, 2 already stored" in capsys.readouterr().err
    assert "Synthetic extreme classification" in (tmp_path / "results.md").read_text()
    with pytest.raises(ValueError, match="scenario"):
        main([*args[:5], "--scenarios", "symmetric:0.2", *args[8:]])
