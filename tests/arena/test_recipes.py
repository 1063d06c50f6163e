"""Training recipes as arena competitors (losskit.arena.recipes): equivalences with the plain
cross-entropy trial, every recipe end to end on digits, and their input errors."""

from __future__ import annotations

import pytest
import torch

from losskit.arena.recipe_run import augment_images
from losskit.arena.recipes import RECIPES, check_recipe, is_recipe
from losskit.arena.suites import Suite, Track, parse_objective
from losskit.arena.trial import Trial, run_trial
from tests.arena.test_runner import FAKES, fake_loader, fake_scenario, image_loader

NOISY = ("cleaned", "co_teaching", "nested_dropout", "co_teaching_nested", "rcal")
LONG_TAIL = ("semi_supervised", "ssp", "rss")


def _run(objective: str, scenario: str = "sym:0.4", epochs: int = 4, **params) -> dict:
    t = Trial("digits", scenario, objective, params=params, model="mlp", epochs=epochs, seed=1)
    return run_trial(t, **FAKES)


def test_co_teaching_without_forgetting_is_the_cross_entropy_trial():
    plain = _run("cross_entropy")
    co = _run("co_teaching", forget_rate=0.0)
    assert co["metrics"] == plain["metrics"]
    assert co["curves"]["test_accuracy"] == plain["curves"]["test_accuracy"]
    assert co["recipe"]["kept_clean_fraction"] == pytest.approx(1 - plain["noise_rate"])


@pytest.mark.parametrize("name", NOISY)
def test_noisy_recipes_run_learn_and_repeat(name):
    a, b = _run(name), _run(name)
    assert a["metrics"] == b["metrics"] and a["recipe"] == b["recipe"]
    assert a["metrics"]["accuracy"] > 0.3  # chance is 0.1
    assert len(a["curves"]["test_accuracy"]) == 4
    assert a["curves"]["test_accuracy"][-1] == a["metrics"]["accuracy"]
    assert a["recipe_params"] == RECIPES[name].defaults
    assert a["noise_rate"] == pytest.approx(0.4, abs=0.05)


@pytest.mark.parametrize("name", LONG_TAIL)
def test_long_tail_recipes_use_the_dropped_samples(name):
    r = _run(name, scenario="lt", epochs=6)
    assert {"head_accuracy", "tail_accuracy"} <= set(r["metrics"])
    assert r["metrics"]["accuracy"] > 0.15  # chance is 0.1; ~250 labels, 2 of class 9
    assert r["curves"]["test_accuracy"][-1] == r["metrics"]["accuracy"]
    if name != "ssp":
        dropped = len(fake_loader("digits").y_train) - r["num_train"]
        assert r["recipe"]["pool_size"] == min(dropped, int(5.0 * r["num_train"]))


def test_recipe_options_change_the_run():
    assert _run("co_teaching")["recipe"]["forget_rate"] == pytest.approx(_run("co_teaching")[
        "noise_rate"])  # fmt: skip
    assert _run("co_teaching", forget_rate=0.2)["recipe"]["forget_rate"] == 0.2
    default, pruned = _run("cleaned"), _run("cleaned", filter_by="prune_by_class")
    assert default["recipe"] != pruned["recipe"]
    small = _run("semi_supervised", scenario="lt", pool_ratio=0.5)
    assert small["recipe"]["pool_size"] == int(0.5 * small["num_train"])


def test_cleaning_removes_mostly_noisy_labels():
    r = _run("cleaned", epochs=6)
    stats = r["recipe"]
    assert stats["removed_precision"] > 0.7  # random removal would give the noise rate 0.4
    assert stats["removed_recall"] > 0.5


def test_nested_dropout_selects_a_cut_within_the_features():
    r = _run("nested_dropout")
    assert 1 <= r["recipe"]["cut"] <= r["recipe"]["dim"] == 256


def test_image_recipes_run_on_the_cnn():
    opts = {"dataset_loader": image_loader, "scenario_fn": fake_scenario}
    for name in ("rcal", "ssp", "nested_dropout"):
        t = Trial("images", "sym:0.2", name, model="cnn", epochs=2, batch_size=32, lr=1e-2,
                  params={"pretrain_epochs": 1} if name != "nested_dropout" else {})  # fmt: skip
        r = run_trial(t, **opts)
        assert 0.0 <= r["metrics"]["accuracy"] <= 1.0 and len(r["curves"]["train_loss"]) == 2


def test_augment_images_crops_and_flips():
    x = torch.randn(6, 3, 32, 32)
    out = augment_images(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(6):
        crops = [padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)


def test_recipe_errors():
    assert is_recipe("rcal") and not is_recipe("cross_entropy")
    with pytest.raises(ValueError, match="unknown"):
        check_recipe("rcal", {"tau": 1.0}, "mlp")
    with pytest.raises(ValueError, match="hidden layer"):
        check_recipe("nested_dropout", {}, "linear")
    with pytest.raises(ValueError, match="recipe must be one of"):
        check_recipe("cleaning", {}, "mlp")
    with pytest.raises(ValueError, match="unlabeled pool"):
        _run("semi_supervised", scenario="clean")


def test_suites_accept_recipes_and_check_them():
    from losskit.arena.cli import build_trials

    ok = Suite("t", (Track("digits", "mlp", 2, ("clean",), ("cross_entropy", "rcal:q=2")),), 1)
    assert [t.objective for t in build_trials(ok, None)] == ["cross_entropy", "rcal"]
    bad = Suite("t", (Track("digits", "linear", 2, ("clean",), ("rcal",)),), 1)
    with pytest.raises(ValueError, match="hidden layer"):
        build_trials(bad, None)


def _rec(sc: str, obj: str, acc: float, recipe: dict | None = None) -> dict:
    r = {"dataset": "digits", "scenario": sc, "objective": obj, "noise_rate": 0.4,
         "metrics": {"accuracy": acc, "balanced_accuracy": acc}}  # fmt: skip
    return {**r, "recipe": recipe} if recipe is not None else r


def test_recipe_claims_cover_their_scenarios_only():
    from losskit.arena.claims import check_claims

    recs = []
    for sc in ("pairflip:0.4", "longtail:100", "longtail:10+symmetric:0.2", "clean"):
        for obj, acc in (
            ("cross_entropy", (0.70, 0.72)),
            ("cleaned", (0.8, 0.81)),
            ("rcal", (0.75, 0.76)),
            ("semi_supervised", (0.6, 0.61)),
        ):
            recs += [_rec(sc, obj, a) for a in acc]  # fmt: skip
    cells = {(r["scenario"], r["objective"]): r["reproduced"] for r in check_claims(recs)}
    assert cells[("pairflip:0.4", "cleaned")] == "yes"
    assert ("longtail:100", "cleaned") not in cells  # no noise: the cleaning claim is silent
    assert cells[("longtail:10+symmetric:0.2", "rcal")] == "yes"
    assert ("pairflip:0.4", "rcal") not in cells  # RCAL's claim needs noise and a long tail
    assert cells[("longtail:100", "semi_supervised")] == "no"
    assert ("longtail:10+symmetric:0.2", "semi_supervised") not in cells
    assert not any(sc == "clean" for sc, _ in cells)


def test_recipe_table_averages_the_diagnostics():
    from losskit.arena.recipe_report import recipe_table

    recs = [_rec("symmetric:0.4", "cleaned", 0.8, {"removed_fraction": f, "removed_precision": 0.9})
            for f in (0.3, 0.5)]  # fmt: skip
    recs += [_rec("symmetric:0.4", "nested_dropout", 0.8, {"cut": c, "dim": 256}) for c in (9, 11)]
    recs.append(_rec("symmetric:0.4", "cross_entropy", 0.7))
    table = recipe_table(recs)
    assert "| digits / symmetric:0.4 | `cleaned` (34) | 2 | removed 40.0 %; removed that were " \
           "noisy 90.0 % |" in table  # fmt: skip
    assert "cut (of dim) 10 of 256" in table and "cross_entropy" not in table
    assert recipe_table([_rec("clean", "cross_entropy", 0.7)]) == ""


def test_noisy_suite_specs_are_valid():
    from losskit.arena.cli import build_trials
    from losskit.arena.suites import get_suite

    suite = get_suite("noisy")
    for track in suite.tracks:  # every recipe spec with its parameters and model
        for spec in track.objectives:
            name, params = parse_objective(spec)
            if is_recipe(name):
                check_recipe(name, params, track.model)
    trials = build_trials(Suite("noisy", suite.tracks[:2], 1), None)  # digits: always present
    assert {t.objective for t in trials} >= {"cleaned", "rcal", "semi_supervised", "rss"}
