"""Distillation trials: end to end on a tiny injected dataset, the teacher cache, determinism,
each adapter path (logits, teacher-free, features + class means, dual head, human soft
labels), the report and the suite wiring.

The dataset is a fake (three Gaussian blobs) injected through ``dataset_loader`` /
``scenario_fn``, and ``LOSSKIT_CACHE`` points at a temporary folder, so the tests neither
need ``/work/shared/data`` nor touch the user's cache.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from losskit.arena import distill_data
from losskit.arena.distill_objectives import (
    ADAPTERS,
    DistillObjective,
    Student,
    get_adapter,
    split_model,
)
from losskit.arena.distill_report import distill_boards, distill_label
from losskit.arena.models import build_model
from losskit.arena.trial import Trial, run_trial

C = 3


def toy_loader(name: str, data_dir=None, *, progress: bool = True):
    """Three overlapping Gaussian blobs in 10 dimensions, 300 train / 200 test rows, and a
    human-style soft label for every test row in ``extras["cifar10h/probs"]``."""
    if name != "toy":
        raise ValueError(f"name must be 'toy', got {name!r}")
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, 500)
    centres = rng.standard_normal((C, 10)) * 1.5
    x = (centres[y] + rng.standard_normal((500, 10))).astype(np.float32)
    probs = np.full((200, C), 0.1, dtype=np.float32)
    probs[np.arange(200), y[300:]] = 1 - 0.1 * (C - 1)
    return SimpleNamespace(
        name=name, task="multiclass", x_train=x[:300], y_train=y[:300], x_test=x[300:],
        y_test=y[300:], num_classes=C, class_names=["a", "b", "c"],
        extras={"cifar10h/probs": probs},
    )  # fmt: skip


def toy_scenario(spec: str, y, num_classes, *, seed: int, extras=None):
    """``clean`` or ``half`` (every other sample, labels kept)."""
    index = np.arange(len(y)) if spec == "clean" else np.arange(0, len(y), 2)
    return SimpleNamespace(index=index, labels=y[index].copy(), clean=y[index].copy())


OPTS = {"dataset_loader": toy_loader, "scenario_fn": toy_scenario}
TEACHER = "mlp:epochs=4"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSKIT_CACHE", str(tmp_path / "cache"))


def _trial(objective: str = "kd", **kw) -> Trial:
    base = dict(dataset="toy", scenario="clean", objective=objective, model="mlp_small",
                epochs=3, batch_size=32, lr=3e-3, teacher=TEACHER)  # fmt: skip
    return Trial(**{**base, **kw})


def _same(a: dict, b: dict) -> None:
    for k in ("metrics", "per_class_accuracy", "curves", "teacher_metrics"):
        assert a[k] == b[k], k


def test_end_to_end_result():
    r = run_trial(_trial(params={"alpha": 0.9}, epochs=4), **OPTS)
    assert r["task"] == "distill"
    assert set(r["metrics"]) == {"accuracy", "macro_f1", "balanced_accuracy", "ece"}
    assert r["metrics"]["accuracy"] > 0.6 and r["teacher_metrics"]["accuracy"] > 0.6
    assert len(r["curves"]["test_accuracy"]) == 4
    assert r["curves"]["test_accuracy"][-1] == r["metrics"]["accuracy"]  # 200 <= curve subset
    assert r["num_train"] == 300 and r["num_test"] == 200
    assert 0 < r["student_params"] < r["teacher_params"]
    assert r["teacher_trained"] and not r["diverged"]


def test_teacher_is_trained_once_and_cached():
    before = distill_data.STATS["trained"]
    a = run_trial(_trial("cross_entropy"), **OPTS)
    b = run_trial(_trial("nkd"), **OPTS)
    assert distill_data.STATS["trained"] == before + 1
    assert a["teacher_trained"] and not b["teacher_trained"]
    assert a["teacher_key"] == b["teacher_key"] and a["teacher_metrics"] == b["teacher_metrics"]
    cache = os.environ["LOSSKIT_CACHE"]
    files = os.listdir(os.path.join(cache, "distill", "teachers"))
    assert f"{a['teacher_key']}.npz" in files
    # another seed, scenario or teacher spec is another teacher
    c = run_trial(_trial("cross_entropy", seed=1), **OPTS)
    d = run_trial(_trial("cross_entropy", scenario="half"), **OPTS)
    e = run_trial(_trial("cross_entropy", teacher="mlp:epochs=5"), **OPTS)
    assert distill_data.STATS["trained"] == before + 4
    assert len({a["teacher_key"], c["teacher_key"], d["teacher_key"], e["teacher_key"]}) == 4


def test_deterministic_by_seed_and_independent_of_the_cache():
    t = _trial("dkd", seed=3)
    fresh = run_trial(t, **OPTS)  # trains the teacher
    cached = run_trial(t, **OPTS)  # loads it
    assert fresh["teacher_trained"] and not cached["teacher_trained"]
    _same(fresh, cached)
    other = run_trial(_trial("dkd", seed=4), **OPTS)
    assert other["curves"]["train_loss"] != fresh["curves"]["train_loss"]


def test_ce_student_does_not_depend_on_the_teacher():
    a = run_trial(_trial("cross_entropy"), **OPTS)
    b = run_trial(_trial("cross_entropy", teacher="mlp:epochs=7"), **OPTS)
    assert a["teacher_key"] != b["teacher_key"] and b["teacher_trained"]
    assert a["metrics"] == b["metrics"] and a["curves"] == b["curves"]


@pytest.mark.parametrize("objective", sorted(ADAPTERS))
def test_every_adapter_trains(objective):
    params = {"alpha": 0.9} if objective == "kd" else {}
    r = run_trial(_trial(objective, params=params), **OPTS)
    assert all(np.isfinite(v) for v in r["curves"]["train_loss"])
    assert r["metrics"]["accuracy"] > 1 / C


def _context(student: Student, teacher_width: int = 6, **kw) -> dict:
    means = torch.randn(C, teacher_width)
    return {
        "teacher_probs": False, "in_features": student.width, "num_classes": C,
        "num_epochs": 24, "teacher_width": teacher_width, "class_means": means, **kw,
    }  # fmt: skip


def _student(dual: bool = False) -> Student:
    torch.manual_seed(0)
    return Student(build_model("mlp_small", np.zeros((1, 10), np.float32), C), C, dual_head=dual)


def test_uskd_is_teacher_free():
    student = _student()
    obj = DistillObjective("uskd", {}, _context(student))
    assert not get_adapter("uskd").needs_teacher
    out = student.outputs(torch.randn(8, 10))
    loss = obj(out, None, None, torch.randint(0, C, (8,)))  # no teacher at all
    loss.backward()
    assert obj.loss.head.weight.grad is not None  # the weak head on the penultimate features
    assert obj.loss.head.in_features == student.width


def test_nd_uses_projected_features_and_class_means():
    student = _student()
    ctx = _context(student)
    obj = DistillObjective("nd", {"kd_weight": 0.0}, ctx)
    assert torch.equal(obj.loss.class_means, ctx["class_means"])
    assert obj.projector[-1].in_features == student.width and obj.projector[-1].out_features == 6
    out = student.outputs(torch.randn(8, 10))
    y = torch.randint(0, C, (8,))
    loss = obj(out, torch.randn(8, C), torch.randn(8, 6), y)
    loss.backward()
    assert obj.projector[-1].weight.grad.abs().sum() > 0
    # with kd_weight=0 and lam=0 only cross-entropy is left
    bare = DistillObjective("nd", {"kd_weight": 0.0, "lam": 0.0}, ctx)
    expected = torch.nn.functional.cross_entropy(out.logits, y)
    torch.testing.assert_close(bare(out, torch.randn(8, C), torch.randn(8, 6), y), expected)


def test_dual_head_student_and_gradients():
    student = _student(dual=True)
    obj = DistillObjective("dual_head_kd", {}, _context(student))
    x = torch.randn(8, 10)
    out = student.outputs(x)
    assert out.aux_logits is not None and out.aux_logits.shape == (8, C)
    student.eval()
    torch.testing.assert_close(student(x), out.logits)  # inference: the main head
    loss = obj(out, torch.randn(8, C), None, torch.randint(0, C, (8,)))
    loss.backward()
    assert student.aux_head.weight.grad.abs().sum() > 0
    backbone, head = split_model(build_model("mlp_small", np.zeros((1, 10), np.float32), C))
    assert head.in_features == student.width


def test_dkd_epoch_is_one_based_and_warmup_scaled():
    student = _student()
    obj = DistillObjective("dkd", {}, _context(student))  # 24 epochs -> warm-up over 2
    obj.set_epoch(0)
    assert obj.loss.epoch == 1 and obj.loss.warmup_factor == 0.5
    obj.set_epoch(1)
    assert obj.loss.warmup_factor == 1.0


def test_human_teacher_split_and_rejections():
    r = run_trial(_trial("kd", teacher="cifar10h"), **OPTS)
    assert r["num_train"] == 100 and r["num_test"] == 100
    assert r["teacher_params"] == 0 and not r["teacher_trained"]
    train, held = distill_data.cifar10h_split(toy_loader("toy").y_test)
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == 200
    for objective in ("nd", "dual_head_kd"):
        with pytest.raises(ValueError, match="probabilities only"):
            run_trial(_trial(objective, teacher="cifar10h"), **OPTS)
    with pytest.raises(ValueError, match="scenario 'clean'"):
        run_trial(_trial("kd", teacher="cifar10h", scenario="half"), **OPTS)


@pytest.mark.parametrize(
    "spec, match",
    [("nope", "teacher kind"), ("mlp:epochs=0", "epochs"), ("mlp:foo=1", "unknown options"),
     ("mlp:student_input=pixels", "student_input"), ("cifar10h:epochs=3", "unknown options"),
     ("", "non-empty")],
)  # fmt: skip
def test_bad_teacher_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        distill_data.parse_teacher(spec)


def test_unknown_objective_is_rejected():
    with pytest.raises(ValueError, match="objective must be one of"):
        run_trial(_trial("focal"), **OPTS)


def test_trial_key_and_dict():
    plain = Trial("toy", "clean", "cross_entropy")
    assert "teacher" not in plain.to_dict()  # ordinary keys do not change
    assert Trial.from_dict(plain.to_dict()) == plain
    taught = Trial("toy", "clean", "cross_entropy", teacher=TEACHER)
    assert taught.to_dict()["teacher"] == TEACHER and taught.key() != plain.key()
    assert Trial.from_dict(taught.to_dict()) == taught


def test_hashed_bow():
    a, b = distill_data.hashed_bow(["What is a cat ?", "who is he"], ["a cat , a cat"], dim=64)
    assert a.shape == (2, 64) and b.shape == (1, 64)
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert 0 < a[0].sum() <= 4 and b[0].sum() <= 2  # distinct words, hashed
    again, _ = distill_data.hashed_bow(["What is a cat ?", "who is he"], [], dim=64)
    assert np.array_equal(a, again)


def test_report_gap_closed_and_claims(tmp_path):
    from losskit.arena.claims import check_claims
    from losskit.arena.report import build_report
    from losskit.arena.runner import run_trials
    from losskit.arena.store import ArenaStore

    arms = (("cross_entropy", {}), ("kd", {"alpha": 0.9}), ("nkd", {}))
    trials = [_trial(o, params=p, seed=s) for o, p in arms for s in (0, 1)]
    with ArenaStore(tmp_path / "arena.sqlite") as store:
        summary = run_trials(trials, store, progress=False, **OPTS)
        records = store.records()
    assert summary.ran == 6 and not summary.failed
    for r in records:
        r["objective"] = "kd:alpha=0.9" if r["objective"] == "kd" else r["objective"]
    (board,) = distill_boards(records)
    acc = {o: np.mean([r["metrics"]["accuracy"] for r in records if r["objective"] == o])
           for o in ("cross_entropy", "nkd")}  # fmt: skip
    teacher = np.mean([r["teacher_metrics"]["accuracy"] for r in records if r["seed"] in (0, 1)
                       and r["objective"] == "cross_entropy"])  # fmt: skip
    if teacher > acc["cross_entropy"]:
        want = (acc["nkd"] - acc["cross_entropy"]) / (teacher - acc["cross_entropy"])
        assert board.gap["nkd"] == pytest.approx(want)
        assert board.gap["cross_entropy"] == 0.0
    else:
        assert board.gap["nkd"] is None
    rows = check_claims([{**r, "dataset": distill_label(r)} for r in records])
    assert {(r["objective"], r["objective_baseline"]) for r in rows} >= {
        ("kd:alpha=0.9", "cross_entropy"),
        ("nkd", "kd:alpha=0.9"),
    }
    build_report(records, tmp_path, command="test", versions={})
    text = (tmp_path / "results.md").read_text()
    assert "## Distillation" in text and "gap closed" in text and "(teacher mlp:epochs=4" in text


def test_distill_suite_wiring():
    from losskit.arena.cli import build_trials
    from losskit.arena.datasets import dataset_available
    from losskit.arena.suites import get_suite

    if not dataset_available("digits"):  # digits comes with scikit-learn
        pytest.skip("digits unavailable")
    suite = get_suite("distill")
    assert all(t.teacher for t in suite.tracks)
    digits_only = suite.override(datasets=["digits"])
    trials = build_trials(digits_only, None)
    assert len(trials) == len(suite.tracks[0].objectives) * suite.seeds
    assert {t.teacher for t in trials} == {suite.tracks[0].teacher}
    human = [t for t in suite.tracks if t.teacher == "cifar10h"]
    assert human and not {"nd", "dual_head_kd"} & set(human[0].objectives)


def test_progressive_table(tmp_path):
    from losskit.arena.distill_report import progressive_table

    path = tmp_path / "progressive.md"
    assert progressive_table(path) == ""
    body = "| student | acc |\n|---|---|\n| 4-stage | 90.0 |"
    path.write_text(f"# Progressive\n\nText.\n\n{body}\n\nMore text.\n| other | 1 |\n")
    assert progressive_table(path) == body
