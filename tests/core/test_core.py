"""The shared machinery: reduction semantics, checks, precision and the registry."""

from __future__ import annotations

import pytest
import torch

import losskit
from losskit._core.checks import check_class_target, check_number, check_scores
from losskit._core.precision import compute_dtype, upcast
from losskit._core.reduction import reduce_loss, sample_weights
from losskit._core.registry import catalog_markdown, register
from losskit.cli import main


def test_reduce_loss_matches_weighted_mean_definition():
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0])
    target = torch.tensor([0, 1, -100, 1])
    weight = torch.tensor([2.0, 0.5])
    w, keep = sample_weights(target, weight, -100)
    assert keep.tolist() == [True, True, False, True]
    torch.testing.assert_close(reduce_loss(loss, "none", w), torch.tensor([2.0, 1.0, 0.0, 2.0]))
    torch.testing.assert_close(reduce_loss(loss, "sum", w), torch.tensor(5.0))
    torch.testing.assert_close(reduce_loss(loss, "mean", w), torch.tensor(5.0 / 3.0))
    torch.testing.assert_close(reduce_loss(loss, "mean"), loss.mean())


def test_ignored_infinite_loss_does_not_poison_the_mean():
    loss = torch.tensor([1.0, float("inf")])
    w, _ = sample_weights(torch.tensor([0, -100]), None, -100)
    assert reduce_loss(loss, "mean", w).item() == 1.0


def test_all_ignored_mean_is_nan_like_torch():
    w, _ = sample_weights(torch.tensor([-100, -100]), None, -100)
    assert torch.isnan(reduce_loss(torch.ones(2), "mean", w))


def test_set_checks_disables_value_checks_only():
    x = torch.full((2, 3), float("nan"))
    with pytest.raises(ValueError, match="logits"):
        check_scores(x)
    losskit.set_checks(False)
    assert not losskit.checks_enabled()
    check_scores(x)  # value check skipped
    with pytest.raises(ValueError, match="logits"):
        check_scores(x[0])  # shape checks stay on
    check_class_target(torch.tensor([0, 7]), x)  # range check skipped


def test_check_number_names_argument_and_bounds():
    assert check_number("tau", 1.5, low=0, high=2) == 1.5
    with pytest.raises(ValueError, match=r"tau must be in \[0, 2\]"):
        check_number("tau", 3, low=0, high=2)
    with pytest.raises(ValueError, match="a must be in"):
        check_number("a", 0.0, low=0.0, low_open=True)
    with pytest.raises(ValueError, match="lam must be a number"):
        check_number("lam", "x")


def test_precision_helpers():
    assert compute_dtype(torch.float16) == torch.float32
    assert compute_dtype(torch.bfloat16) == torch.float32
    assert compute_dtype(torch.float64) == torch.float64
    assert upcast(torch.ones(2, dtype=torch.float16)).dtype == torch.float32


def _data_arguments(module: type, defaults: dict | None = None) -> dict:
    """Plausible values for constructor arguments that come from the data or the model
    architecture, not the paper."""
    import inspect

    data = {
        "class_counts": torch.tensor([50, 20, 5]),
        "num_samples": 10,
        "num_classes": 3,
        "in_features": 4,
        "class_means": torch.randn(3, 4),
        "student_dims": 4,
        "teacher_dims": 8,
        "layer_map": [(0, 0), (1, 2)],
    }
    params = inspect.signature(module).parameters.values()
    required = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in (defaults or {})
    ]
    assert set(required) <= set(data), f"{module.__name__} needs {required}"
    return {name: data[name] for name in required}


def test_registry_entries_are_complete():
    entries = losskit.catalog()
    assert entries, "nothing registered"
    for e in entries:
        assert e.function is not None or e.module is not None
        assert e.summary
        assert all(1 <= p <= 58 for p in e.papers)
        assert losskit.get(e.name) is e
        for p in e.papers:
            assert e in losskit.catalog(paper=p)
        if e.kind == "loss" and e.module is not None:
            e.build(**_data_arguments(e.module, e.defaults))  # paper defaults are valid arguments


def test_registry_rejects_bad_entries():
    with pytest.raises(ValueError, match="kind"):
        register("x_bad_kind", kind="thing", family="f", summary="s", function=abs)
    with pytest.raises(ValueError, match="papers"):
        register("x_bad_paper", kind="loss", family="f", papers=(99,), summary="s", function=abs)
    with pytest.raises(ValueError, match="already registered"):
        register("cross_entropy", kind="loss", family="f", summary="s", function=abs)
    with pytest.raises(ValueError, match="did you mean"):
        losskit.get("cross_entropi")


def test_cli_catalog(capsys):
    assert main(["catalog"]) == 0
    out = capsys.readouterr().out
    assert all(e.name in out for e in losskit.catalog())
    assert main(["catalog", "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == catalog_markdown()


def test_readme_catalog_is_current():
    from pathlib import Path

    readme = Path(__file__).resolve().parents[2] / "README.md"
    assert catalog_markdown() in readme.read_text(), "regenerate: losskit catalog --markdown"
