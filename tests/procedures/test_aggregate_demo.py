"""The paper-48 demonstration: the jobs and the batched objective of the MLP trial against
per-model losses, and a quick smoke run of :func:`run` (diabetes ships with scikit-learn)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from losskit.arena.demos import DemoResult
from losskit.procedures import aggregate_trials as trials
from losskit.procedures.aggregate_demo import run


def test_jobs_cover_every_rho_on_every_fold():
    ids = np.repeat(np.arange(6), 3)
    ybar = np.arange(6.0)
    jobs, fold = trials._jobs(ids, ybar, (0.0, 1.0), 3, np.random.default_rng(0))
    assert len(jobs) == 2 * (1 + 3) and sorted(np.bincount(fold).tolist()) == [2, 2, 2]
    for job in jobs:
        kept = np.flatnonzero(fold != job.fold)
        np.testing.assert_array_equal(job.rows, np.flatnonzero(np.isin(ids, kept)))
        np.testing.assert_array_equal(job.responses, ybar[kept])
        np.testing.assert_array_equal(job.responses[job.bags], ids[job.rows].astype(float))


def test_quick_run(tmp_path):
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("scikit-learn (which ships the diabetes data) is not installed")
    r = run(tmp_path, seeds=1, quick=True, data_dir=None)
    assert isinstance(r, DemoResult) and r.name == "aggregate" and r.papers == (48,)
    assert (tmp_path / "aggregate_plot.png").stat().st_size > 1000
    assert "![bag-level vs instance-level](aggregate_plot.png)" in r.markdown
    assert len(r.verdicts) == 6
    assert all(v.verdict in ("yes", "no", "tie", "partly") for v in r.verdicts)
    settings = r.data["settings"]
    assert set(settings) == {"synthetic", "diabetes_linear", "diabetes_mlp"}
    for s in settings.values():
        for arm in trials.ARMS:
            values = np.array([s[arm][str(k)] for k in r.data["sizes"]])
            assert values.shape == (len(r.data["sizes"]), 1) and (values > 0).all()
        rhos = [v for k in r.data["sizes"] for v in s["rho"][str(k)]]
        assert min(r.data["rhos"]) <= min(rhos) and max(rhos) <= max(r.data["rhos"])
    with pytest.raises(ValueError, match="seeds"):
        run(tmp_path, seeds=0, quick=True, data_dir=None)


def test_batch_objective_is_the_sum_of_each_models_interpolating_loss():
    import torch

    from losskit.labels.aggregate import aggregate_interpolating_loss

    rng = np.random.default_rng(1)
    n, train = 20, np.sort(rng.permutation(20)[:14])
    ids = np.repeat(np.arange(7), 2)[rng.permutation(14)]
    ybar = rng.normal(size=7)
    jobs, _ = trials._jobs(ids, ybar, (0.0, 0.3, 1.0), 3, rng)
    pred = torch.randn(len(jobs), n, dtype=torch.float64, requires_grad=True)
    batch = trials.BatchObjective(jobs, train, n)(pred)
    slow = sum(
        aggregate_interpolating_loss(
            pred[j, train[job.rows]], torch.as_tensor(job.bags),
            torch.as_tensor(job.responses), rho=job.rho,
        )
        for j, job in enumerate(jobs)
    )  # fmt: skip
    torch.testing.assert_close(batch, slow)
    (grad,) = torch.autograd.grad(batch, pred)
    (grad0,) = torch.autograd.grad(slow, pred)
    torch.testing.assert_close(grad, grad0)
