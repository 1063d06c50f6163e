"""Demonstration of Loki (paper 47): the Fréchet-mean prediction rule predicts classes that
were held out of training, given a metric over the full label space.

:func:`run` (the arena's demo interface) trains logistic-regression probes on the observed
classes only and compares ``argmax`` over the observed classes with
:func:`~losskit.diagnostics.loki.loki_predict` over all classes under several label metrics
(:mod:`losskit.procedures.loki_tasks`):

- TREC-50 questions (frozen all-MiniLM-L6-v2 embeddings): per seed, half of the fine classes
  of every coarse class (rounded down) are held out. Metrics: the coarse -> fine hierarchy,
  MiniLM embeddings of class descriptions (full, and on their top 2 / 4 / 8 / 16 principal
  components), and the discrete metric. Also, once, a probe that observes all 50 classes.
- CIFAR-10 (2x2-pooled pixels, whitened to 128 principal components): per seed, 3 of the 10
  classes are held out. Metrics: MiniLM embeddings of the class names (full, 2 / 4 / 8
  components) and the discrete metric.

Verdicts compare rules seed by seed (paired): 'yes' where the mean improvement is larger than
its standard deviation over seeds, 'no' where the mean loss is, 'tie' otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from losskit.arena.demos import DemoResult, Verdict
from losskit.diagnostics.loki import loki_predict, prediction_scores
from losskit.procedures import loki_tasks as tasks
from losskit.procedures.loki_report import hit_rate, markdown, ms, plot

NAME = "loki"
TITLE = "Loki: Fréchet-mean prediction over a label metric space"
KEYS = ("accuracy", "held_out_accuracy", "unobserved_share", "hit_rate", "esd", "esd_names")
HELD_KEYS = ("held_out_accuracy", "unobserved_share", "hit_rate")
MIN_HELD = 0.02  # held-out-class accuracy that counts as predicting held-out classes


def _evaluate(p, observed, metrics, y, held, ref, names_ref=None) -> dict[str, dict]:
    """Predictions of argmax and of Loki under every metric with their scores: accuracy on
    all rows; on the rows ``held`` (true class held out) the accuracy, the share of
    predictions outside ``observed`` and the hit rate (correct among those, NaN without
    any); E[d²] under ``ref`` (and ``names_ref``) on all rows."""
    rules = {"argmax": observed[p.argmax(axis=1)]}
    rules.update({f"Loki, {k}": loki_predict(p, d, observed) for k, d in metrics.items()})
    out = {}
    for rule, pred in rules.items():
        s = prediction_scores(pred, y, ref)
        n_held = max(int(held.sum()), 1)
        correct = int((pred[held] == y[held]).sum())
        unobserved = int((~np.isin(pred[held], observed)).sum())
        out[rule] = {
            "accuracy": s["accuracy"],
            "held_out_accuracy": correct / n_held,
            "unobserved_share": unobserved / n_held,
            "hit_rate": correct / unobserved if unobserved else float("nan"),
            "esd": s["expected_squared_distance"],
            "esd_names": prediction_scores(pred, y, names_ref)["expected_squared_distance"]
            if names_ref is not None
            else float("nan"),
            "pred": pred,
        }
    return out


def _trec(ds, seeds, quick, bar) -> tuple[dict, dict, dict]:
    metrics = tasks.trec_metrics(ds.class_names)
    max_iter = 100 if quick else 1000
    runs: dict[str, dict[str, list]] = {}
    sizes: dict[str, list] = {"observed": [], "train": [], "unseen": []}
    for seed in seeds:
        held = tasks.trec_split(ds.class_names, seed)
        observed = np.setdiff1d(np.arange(ds.num_classes), held)
        train = np.isin(ds.y_train, observed)
        fit_rows = np.flatnonzero(train)
        if quick:
            fit_rows = np.sort(np.random.default_rng(seed).permutation(fit_rows)[:600])
        probe = tasks.fit_probe(ds.x_train[fit_rows], ds.y_train[fit_rows], observed, max_iter)
        # test split, then the training questions of held-out classes (never seen either)
        x = np.concatenate([ds.x_test, ds.x_train[~train]])
        y = np.concatenate([ds.y_test, ds.y_train[~train]])
        p = probe.predict_proba(x)
        n_test = len(ds.y_test)
        unseen = np.isin(y, held)
        test_part = _evaluate(
            p[:n_test],
            observed,
            metrics,
            y[:n_test],
            unseen[:n_test],
            metrics["tree"],
            metrics["names"],
        )
        unseen_part = _evaluate(
            p[unseen], observed, metrics, y[unseen], np.ones(unseen.sum(), bool), metrics["tree"]
        )
        for rule, scores in test_part.items():
            r = runs.setdefault(rule, {k: [] for k in (*KEYS, "agree")})
            for k in ("accuracy", "esd", "esd_names"):
                r[k].append(scores[k])
            for k in HELD_KEYS:
                r[k].append(unseen_part[rule][k])
            r["agree"].append(float(np.mean(scores["pred"] == test_part["argmax"]["pred"])))
        sizes["observed"].append(len(observed))
        sizes["train"].append(len(fit_rows))
        sizes["unseen"].append(int(unseen.sum()))
        bar.update()
    full = {}
    if not quick:  # every class observed: one deterministic fit
        everything = np.arange(ds.num_classes)
        probe = tasks.fit_probe(ds.x_train, ds.y_train, everything, max_iter)
        p = probe.predict_proba(ds.x_test)
        no_held = np.zeros(len(ds.y_test), bool)
        keep = {k: metrics[k] for k in ("tree", "names")}
        full = _evaluate(p, everything, keep, ds.y_test, no_held, metrics["tree"], metrics["names"])
        full = {rule: {k: v for k, v in s.items() if k != "pred"} for rule, s in full.items()}
    return runs, sizes, full


def _cifar(ds, seeds, quick, bar) -> tuple[dict, dict]:
    metrics = tasks.cifar_metrics(ds.class_names)
    per_train, per_test = (50, 50) if quick else (700, 300)
    tr = tasks.stratified_subset(ds.y_train, per_train, seed=0)
    te = tasks.stratified_subset(ds.y_test, per_test, seed=0)
    x_tr, x_te = tasks.pooled_pixels(ds.x_train[tr]), tasks.pooled_pixels(ds.x_test[te])
    y_tr, y_te = ds.y_train[tr], ds.y_test[te]
    runs: dict[str, dict[str, list]] = {}
    for seed in seeds:
        held = tasks.cifar_split(seed, ds.num_classes)
        observed = np.setdiff1d(np.arange(ds.num_classes), held)
        keep = np.isin(y_tr, observed)
        z_tr, z_te = tasks.whiten(x_tr[keep], x_te)
        probe = tasks.fit_probe(z_tr, y_tr[keep], observed, 100 if quick else 1000)
        part = _evaluate(
            probe.predict_proba(z_te),
            observed,
            metrics,
            y_te,
            np.isin(y_te, held),
            metrics["names"],
        )
        for rule, scores in part.items():
            r = runs.setdefault(rule, {k: [] for k in (*KEYS, "agree", "held")})
            for k in KEYS:
                r[k].append(scores[k])
            r["agree"].append(float(np.mean(scores["pred"] == part["argmax"]["pred"])))
            r["held"].append([ds.class_names[h] for h in held])
        bar.update()
    return runs, {"train": int(keep.sum()), "test": len(te), "per_train": per_train}


def _paired(better: np.ndarray) -> str:
    """'yes' / 'no' / 'tie' for per-seed improvements ``better`` (positive = better)."""
    mean, std = float(np.mean(better)), float(np.std(better))
    return "yes" if mean > std and mean > 0 else "no" if mean < -std and mean < 0 else "tie"


def _claims(label: str, runs: dict, main: str, variants: list[str], chance: float) -> list:
    """Verdicts for one metric family: E[d²] against argmax, and whether Loki predicts
    held-out classes: held-out-class accuracy at least ``MIN_HELD`` and above its std over
    seeds, and a hit rate among unobserved predictions above ``chance`` (a uniform guess
    among the held-out classes)."""
    r, base = runs[main], runs["argmax"]
    gain = np.asarray(base["esd"]) - np.asarray(r["esd"])
    acc = np.asarray(r["accuracy"]) - np.asarray(base["accuracy"])
    out = [
        Verdict(
            f"{label}: Loki ({main[6:]}) lowers the expected squared distance",
            _paired(gain),
            f"E[d²] {ms(r['esd'], 1, 3)} vs argmax {ms(base['esd'], 1, 3)} (paired "
            f"gain {ms(gain, 1, 3)}); accuracy change {ms(acc)} points",
        )
    ]

    def predicts(rule: str) -> bool:
        held, hits = np.asarray(runs[rule]["held_out_accuracy"]), runs[rule]["hit_rate"]
        return held.mean() >= MIN_HELD and held.mean() > held.std() and np.nanmean(hits) > chance

    good = [v for v in variants if predicts(v)]
    best = max(variants, key=lambda v: np.mean(runs[v]["held_out_accuracy"]))
    hits = "none made" if hit_rate(runs[best]) == "–" else f"{hit_rate(runs[best])} %"
    verdict = "yes" if predicts(main) and _paired(acc) != "no" else "partly" if good else "no"
    out.append(
        Verdict(
            f"{label}: Loki predicts held-out classes (never trained on) without losing accuracy",
            verdict,
            f"held-out-class accuracy {ms(r['held_out_accuracy'])} % with {main[6:]}; highest: "
            f"{best[6:]}, {ms(runs[best]['held_out_accuracy'])} % (unobserved predictions "
            f"right: {hits}, chance "
            f"{100 * chance:.0f} %) at test "
            f"accuracy {ms(runs[best]['accuracy'])} vs argmax {ms(base['accuracy'])} %; "
            f"variants that predict held-out classes: {'; '.join(v[6:] for v in good) or 'none'}",
        )
    )
    return out


def _check_data(data_dir: str | None) -> None:
    from losskit.arena.datasets import missing_files

    missing = [str(p) for name in ("trec50", "cifar10") for p in missing_files(name, data_dir)]
    if missing:
        raise ValueError(f"{NAME} needs missing data files: {', '.join(missing)}")


def run(out_dir: Path, *, seeds: int, quick: bool, data_dir: str | None) -> DemoResult:
    """Loki against argmax with held-out classes on TREC-50 and CIFAR-10; see the module
    docstring."""
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    from losskit.arena.datasets import load_dataset

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    _check_data(data_dir)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_list = list(range(seeds))
    with threadpool_limits(1), tqdm(total=2 * seeds, desc=NAME, unit="fit") as bar:
        trec = load_dataset("trec50", data_dir, progress=True)
        trec_runs, trec_sizes, full = _trec(trec, seed_list, quick, bar)
        cifar = load_dataset("cifar10", data_dir, progress=True)
        cifar_runs, cifar_sizes = _cifar(cifar, seed_list, quick, bar)
    plot_name = f"{NAME}_plot.png"
    plot({"TREC-50": (trec_runs, "tree"), "CIFAR-10": (cifar_runs, "names")}, out_dir / plot_name)
    agree = min(min(r["Loki, discrete"]["agree"]) for r in (trec_runs, cifar_runs))
    n_pred = seeds * (len(trec.y_test) + cifar_sizes["test"])
    trec_names = ["Loki, names", *(f"Loki, names, {k} PCs" for k in tasks.TREC_COMPONENTS)]
    cifar_names = ["Loki, names", *(f"Loki, names, {k} PCs" for k in tasks.CIFAR_COMPONENTS)]
    n_trec, n_cifar = 50 - trec_sizes["observed"][0], tasks.CIFAR_HELD_OUT
    verdicts = [
        Verdict(
            "With the discrete metric Loki is the argmax over the observed classes",
            "yes" if agree == 1.0 else "no",
            f"{100 * agree:.1f} % of {n_pred} test predictions agree (TREC-50 and CIFAR-10)",
        ),
        *_claims("TREC-50, hierarchy", trec_runs, "Loki, tree", ["Loki, tree"], 1 / n_trec),
        *_claims("TREC-50, class names", trec_runs, "Loki, names", trec_names, 1 / n_trec),
        *_claims("CIFAR-10, class names", cifar_runs, "Loki, names", cifar_names, 1 / n_cifar),
    ]
    if full:
        tree, names, base = full["Loki, tree"], full["Loki, names"], full["argmax"]
        verdicts.append(
            Verdict(
                "TREC-50, every class observed: Loki (tree) lowers the expected squared "
                "distance (one deterministic fit, no seeds)",
                "yes" if tree["esd"] < base["esd"] else "no",
                f"E[d²] tree {tree['esd']:.3f} vs argmax {base['esd']:.3f} (Loki with names: "
                f"{names['esd']:.3f}); accuracy {100 * tree['accuracy']:.1f} vs "
                f"{100 * base['accuracy']:.1f} %",
            )
        )
    md = markdown(
        trec, trec_runs, trec_sizes, full, cifar_runs, cifar_sizes, seeds, plot_name, quick
    )
    data = {
        "trec50": trec_runs,
        "trec50_sizes": trec_sizes,
        "trec50_all_observed": full,
        "cifar10": cifar_runs,
        "cifar10_sizes": cifar_sizes,
        "seeds": seeds,
        "quick": quick,
    }
    return DemoResult(NAME, TITLE, (47,), md, verdicts, data, time.perf_counter() - start)
