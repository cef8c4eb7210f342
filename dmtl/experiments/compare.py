"""Runs settings / methods / coupling ablations over seeds (or folds) and writes the paper's kind of tables.

Rows: ST (two single-task models), NC MT, C MT (Tables 2 and 4), one row per baseline method (Table 5), or the
coupling ablation (none, DM only, SCA only, both, for each loss form; Table 3). Each cell is mean ± std over
seeds; each multi-task row also shows its difference from ST per task, with negative transfer flagged.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from dmtl import config as config_lib
from dmtl.coupling import PRINTED, RECIPES, RECOMMENDED

SETTING_ROWS = {"st": "ST", "nc": "NC MT", "c": "C MT"}


def method_labels() -> dict:
    """``--methods`` shorthand -> its name in tables, from the registries (each piece's ``label`` /
    ``shorthand`` / ``auxiliary``)."""
    from dmtl import architectures, coupling, label_completion, weighting

    labels = {}
    for name in weighting.REGISTRY:
        labels[name] = weighting.weighting_class(name).label or name
    for registry, lookup in ((architectures.REGISTRY, architectures.architecture_class),
                             (label_completion.REGISTRY, label_completion.completion_class)):
        for name in registry:
            short = lookup(name).shorthand
            if short:
                labels[short[0]] = short[1]
    for name in coupling.REGISTRY:
        short = coupling.coupling_class(name).auxiliary
        if short:
            labels[short[0]] = short[1]
    return labels


# Coupling loss forms of the ablation: {form: {coupling: options}} (the paper's Table 3 layout: DM, SCA, both)
FORMS = {
    "distillation": {"dm": {"target": "attributes-as-target"}, "sca": {"direction": "distillation"}},
    "mixture-target": {"dm": {"target": "mixture-as-target"}, "sca": {"direction": "distillation"}},
    "bernoulli": {"dm": {"form": "bernoulli"}, "sca": {}},
    **{name: recipe for name, recipe in RECIPES.items() if name != "recommended"},
}
METRIC_KEYS = {"classes": ("accuracy", "average_accuracy", "macro_f1"),
               "attributes": ("mean_f1", "mean_accuracy", "afa")}


@dataclasses.dataclass
class Row:
    """One row of a table: a label and the runs (setting + overrides) that produce its numbers."""

    label: str
    runs: list  # [(run name, overrides dict)]
    is_baseline: bool = False


def plan(settings, methods, ablation, forms) -> list[Row]:
    rows = []
    for setting in settings:
        if setting == "st":
            rows.append(Row("ST", [("st-classes", {"setting": "st-classes"}),
                                   ("st-attributes", {"setting": "st-attributes"})], is_baseline=True))
        elif setting in ("nc", "c"):
            rows.append(Row(SETTING_ROWS[setting], [(setting, {"setting": setting, "method": "ew"})]))
        elif setting.startswith("c-") and setting[2:] in RECIPES:
            recipe = setting[2:]
            label = (f"C MT (recommended = {RECOMMENDED})" if recipe == "recommended" else
                     "C MT (as printed)" if recipe == "printed" else f"C MT ({recipe})")
            # "recommended" is an alias: its runs are the chosen recipe's (run once when both rows are asked for)
            chosen = RECOMMENDED if recipe == "recommended" else recipe
            rows.append(Row(label, [(f"c-{chosen}", {"setting": "c", "method": "ew", "coupling_recipe": chosen})]))
        else:
            raise ValueError(f"unknown setting {setting!r} (st, nc, c, or c-RECIPE with RECIPE in {sorted(RECIPES)})")
    for method in methods:
        if method == "ew":
            continue
        rows.append(Row(method_labels().get(method, method), [(f"{method}-nc", {"setting": "nc", "method": method})]))
    if ablation == "coupling":
        planned = set()
        for form in forms:
            if form not in FORMS:
                raise ValueError(f"unknown coupling form {form!r}; choose from {sorted(FORMS)}")
            options = FORMS[form]
            paper = list(PRINTED)  # the paper's couplings (Table 3: each alone, then together)
            for chosen in [[name] for name in paper] + [paper]:
                label = "+".join(name.upper() for name in chosen)
                # only the options of the losses switched on matter: skip a row another form already runs
                effective = tuple((c, tuple(sorted(options.get(c, {}).items()))) for c in chosen)
                if effective in planned:
                    continue
                planned.add(effective)
                coupling = {c: (dict(options.get(c, {})) if c in chosen else False) for c in paper}
                overrides = {"setting": "c", "coupling_recipe": "printed", "coupling": coupling}
                rows.append(Row(f"{label} ({form})", [(f"c-{'-'.join(chosen)}-{form}", overrides)]))
    return rows


def row_extra(extra, overrides) -> dict:
    """The comparison's common overrides for one run: ``auxiliary.<term>`` options given to ``compare`` configure
    that method's row only (``--methods aal --set auxiliary.aal.pairs=...``), not every row."""
    extra = dict(extra or {})
    own = config_lib.method_auxiliary().get(overrides.get("method"))
    if isinstance(extra.get("auxiliary"), dict):
        extra["auxiliary"] = {k: v for k, v in extra["auxiliary"].items() if k == own}
        extra["auxiliary"] = extra["auxiliary"] or None
        if extra["auxiliary"] is None:
            del extra["auxiliary"]
    return extra


def uses_teachers(method) -> bool:
    """Whether the ``--methods`` shorthand's piece learns from the single-task runs (KD-MTL, SA-PL: their
    ``uses_teachers``)."""
    from dmtl import coupling, label_completion

    table = config_lib.method_shorthands()
    if method not in table:
        return False
    _, _, completion, axis = table[method]
    if axis == "auxiliary":
        return coupling.coupling_class(config_lib.method_auxiliary()[method]).uses_teachers
    return bool(getattr(label_completion.completion_class(completion), "uses_teachers", False))


def teacher_overrides(overrides, rows, out, suffix: str) -> dict:
    """Where the comparison trains the ST row, a method that learns from single-task teachers reads that row's runs
    of the same seed (or fold) instead of training its own (``teachers`` option; ST runs first in each seed)."""
    method = overrides.get("method")
    if not uses_teachers(method) or not any(row.label == "ST" for row in rows):
        return {}
    runs = Path(out) / "runs"
    return {"method_options": {"teachers": {"classes": str(runs / f"st-classes-{suffix}"),
                                            "attributes": str(runs / f"st-attributes-{suffix}")}}}


def run_all(database, out, rows, seeds, data=None, config_file=None, extra=None, verbose=0,
            folds=False) -> list[dict]:
    """Trains and evaluates every run of every row for every seed (or fold: ``folds=True`` makes each value
    both the seed and the cross-validation fold); returns one record per (row, seed)."""
    import keras

    from dmtl.evaluation import evaluate_run
    from dmtl.training.run import run

    import time

    out = Path(out)
    records = []
    unique = {f"{name}-{'fold' if folds else 'seed'}{seed}" for seed in seeds for row in rows for name, _ in row.runs}
    done, start = set(), time.time()
    for seed in seeds:
        for row in rows:
            merged = {"label": row.label, "seed": seed}
            for name, overrides in row.runs:
                fold = {"fold": seed} if folds else {}
                teachers = teacher_overrides(overrides, rows, out, f"{'fold' if folds else 'seed'}{seed}")
                config = config_lib.resolve(database, config_file, {**row_extra(extra, overrides), **overrides,
                                                                    **teachers, **fold, "seed": seed, "data": data})
                run_dir = out / "runs" / f"{name}-{'fold' if folds else 'seed'}{seed}"
                elapsed = time.time() - start
                eta = (f", ETA {elapsed / len(done) * (len(unique) - len(done)) / 60:.1f} min" if done else "")
                print(f"== [{len(done) + (run_dir.name not in done)}/{len(unique)}] {row.label} / {name} / "
                      f"seed {seed} -> {run_dir} ({elapsed / 60:.1f} min{eta})", flush=True)
                run(config, run_dir, verbose=verbose)
                done.add(run_dir.name)
                result = evaluate_run(run_dir, split="test")
                for task in ("classes", "attributes"):
                    if task in result:
                        for key in METRIC_KEYS[task]:
                            merged[f"{task}_{key}"] = result[task][key]
                for key, value in result.get("diagnostics", {}).items():
                    merged[f"diag_{key}"] = value
                if "attributes_val_thresholds" in result:
                    merged["attributes_mean_f1_val_thresholds"] = result["attributes_val_thresholds"]["mean_f1"]
                for task, best in result.get("per_task_best", {}).items():
                    merged[f"{task}_at_own_best_epoch"] = best["at_own_best_epoch"]
                for key, values in conflict_history(run_dir).items():  # the last epoch's gradient cosines
                    if np.isfinite(values[-1]):  # none where a term's gradient was zero (a teacher weighed 0)
                        merged[f"conflict_{key}"] = values[-1]
                keras.backend.clear_session()
            records.append(merged)
    return records


def conflict_history(run_dir) -> dict:
    """``{grad_cos_*: [value per epoch]}`` from a run's history (:class:`dmtl.training.callbacks.GradientConflict`;
    empty for single-task runs and runs that did not log it)."""
    history = Path(run_dir) / "history.csv"
    if not history.is_file():
        return {}
    rows = list(csv.DictReader(open(history)))
    keys = sorted({k for r in rows for k in r if k.startswith("grad_cos_")})
    return {k: [float(r[k]) if r.get(k) not in (None, "") else float("nan") for r in rows] for k in keys}


def conflict_curves(out, rows, seeds, folds=False) -> dict:
    """``{row label: mean grad_cos_tasks per epoch over the seeds}`` of the rows whose runs logged it."""
    curves = {}
    for row in rows:
        for name, _ in row.runs:
            series = [conflict_history(Path(out) / "runs" / f"{name}-{'fold' if folds else 'seed'}{seed}").get(
                "grad_cos_tasks") for seed in seeds]
            series = [s for s in series if s]
            if series:
                length = min(len(s) for s in series)
                curves[row.label] = np.nanmean([s[:length] for s in series], axis=0).tolist()
    return curves


def summarise(records, rows, primary) -> list[dict]:
    """Mean and std per row and metric, and each row's difference from ST on the primary metrics."""
    table = []
    for row in rows:
        mine = [r for r in records if r["label"] == row.label]
        entry = {"label": row.label, "n": len(mine)}
        for key in sorted({k for r in mine for k in r if k not in ("label", "seed")}):
            values = np.array([r[key] for r in mine if key in r], np.float64)
            entry[key] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
        table.append(entry)
    st = next((e for e in table if e["label"] == "ST"), None)
    for entry in table:
        for task in ("classes", "attributes"):
            key = f"{task}_{primary[task]}"
            if st is not None and entry is not st and key in entry and key in st:
                diff = entry[key][0] - st[key][0]
                entry[f"{task}_delta_vs_st"] = diff
                entry[f"{task}_negative_transfer"] = diff < 0
    return table


def _fmt(cell):
    mean, std = cell
    return f"{mean:.3f} ± {std:.3f}"


def write_results(out, records, table, primary, meta) -> None:
    out = Path(out)
    keys = sorted({k for r in records for k in r})
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["label", "seed", *[k for k in keys if k not in ("label", "seed")]])
        writer.writeheader()
        writer.writerows(records)
    pc, pa = primary["classes"], primary["attributes"]
    over = f"{meta['seeds']} fold(s)" if meta.get("folds") else f"{meta['seeds']} seed(s)"
    lines = [f"# {meta['database']}: mean ± std over {over}", "",
             f"Primary metrics: classes {pc}, attributes {pa} (the paper's pair for this database). "
             f"Δ = difference from ST; ▼ = negative transfer (below ST).", "",
             f"| setting | classes {pc} | attributes {pa} | Δ classes | Δ attributes |", "|---|---|---|---|---|"]
    for e in table:
        cells = []
        for task, metric in (("classes", pc), ("attributes", pa)):
            key = f"{task}_{metric}"
            cells.append(_fmt(e[key]) if key in e else "–")
        deltas = []
        for task in ("classes", "attributes"):
            if f"{task}_delta_vs_st" in e:
                mark = " ▼" if e[f"{task}_negative_transfer"] else ""
                deltas.append(f"{e[f'{task}_delta_vs_st']:+.3f}{mark}")
            else:
                deltas.append("–")
        lines.append(f"| {e['label']} | {cells[0]} | {cells[1]} | {deltas[0]} | {deltas[1]} |")
    lines += ["", "All metrics:", "", "| setting | " + " | ".join(f"{t} {k}" for t, ks in METRIC_KEYS.items()
                                                              for k in ks) + " |",
              "|---|" + "---|" * 6]
    for e in table:
        lines.append(f"| {e['label']} | " + " | ".join(_fmt(e[f"{t}_{k}"]) if f"{t}_{k}" in e else "–"
                                                    for t, ks in METRIC_KEYS.items() for k in ks) + " |")
    diag = [("diag_attribute_mean_probability", "mean attribute probability"),
            ("diag_class_entropy", "class prediction entropy (nats)")]
    if any(k in e for e in table for k, _ in diag):
        lines += ["", "Diagnostics (test split):", "", "| setting | " + " | ".join(t for _, t in diag) + " |",
                  "|---|---|---|"]
        for e in table:
            lines.append(f"| {e['label']} | " + " | ".join(_fmt(e[k]) if k in e else "–" for k, _ in diag) + " |")
    if any(f"{t}_at_own_best_epoch" in e for e in table for t in ("classes", "attributes")):
        lines += ["", "Negative transfer, diagnosed: each task's primary metric (test) at the selected checkpoint "
                      "(best mean validation score) and at the task's own best validation epoch. A gap means "
                      "choosing one epoch for two tasks costs that task; no gap, that the shared model does.", "",
                  f"| setting | classes {pc} selected | classes {pc} own best epoch | attributes {pa} selected | "
                  f"attributes {pa} own best epoch |", "|---|---|---|---|---|"]
        for e in table:
            if any(f"{t}_at_own_best_epoch" in e for t in ("classes", "attributes")):
                cells = [_fmt(e[k]) if k in e else "–" for t, m in (("classes", pc), ("attributes", pa))
                         for k in (f"{t}_{m}", f"{t}_at_own_best_epoch")]
                lines.append(f"| {e['label']} | " + " | ".join(cells) + " |")
    conflict = sorted({k for e in table for k in e if k.startswith("conflict_grad_cos_")})
    if conflict:
        names = [k[len("conflict_grad_cos_"):].replace("tasks", "classes vs attributes").replace("_", " -> ")
                 for k in conflict]
        lines += ["", "Gradient conflict at the last epoch: the cosine between the gradients on the shared network "
                      "of the two tasks, and of each coupling and the task it teaches, on fixed training batches "
                      "(negative = the two conflict, Yu et al. 2020).", "",
                  "| setting | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for e in table:
            if any(k in e for k in conflict):
                lines.append(f"| {e['label']} | " + " | ".join(_fmt(e[k]) if k in e else "–" for k in conflict)
                             + " |")
    if any("attributes_mean_f1_val_thresholds" in e for e in table):
        lines += ["", "Attribute mean F1 with per-attribute thresholds tuned on validation (not the paper's 0.5):", ""]
        for e in table:
            if "attributes_mean_f1_val_thresholds" in e:
                lines.append(f"- {e['label']}: {_fmt(e['attributes_mean_f1_val_thresholds'])}")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"meta": meta, "table": table, "records": records}, indent=2))
    plot(out / "results.png", table, primary, meta, meta.get("conflict_curves"))


def plot(path, table, primary, meta, curves=None) -> None:
    """The primary metrics per setting (bars, mean ± std); with ``curves``, beside them the cosine between the
    tasks' gradients per epoch for each setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [e["label"] for e in table]
    width_in = max(5, 1.2 * len(labels) + 2)
    if curves:
        fig, (ax, conflict_ax) = plt.subplots(1, 2, figsize=(width_in + 4.5, 3.6),
                                              gridspec_kw={"width_ratios": [width_in, 4.5]})
        for label, curve in curves.items():
            conflict_ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=label)
        conflict_ax.axhline(0.0, color="grey", linewidth=0.8)
        conflict_ax.set_xlabel("epoch")
        conflict_ax.set_ylabel("cos(g_classes, g_attributes)")
        conflict_ax.set_title("gradient conflict (shared network)")
        conflict_ax.legend(fontsize=7)
    else:
        fig, ax = plt.subplots(figsize=(width_in, 3.6))
    width = 0.38
    for i, (task, colour) in enumerate((("classes", "tab:blue"), ("attributes", "tab:orange"))):
        key = f"{task}_{primary[task]}"
        means = [e[key][0] if key in e else np.nan for e in table]
        stds = [e[key][1] if key in e else 0 for e in table]
        ax.bar(np.arange(len(labels)) + (i - 0.5) * width, means, width, yerr=stds, capsize=3, color=colour,
               label=f"{task} {primary[task]}")
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_title(f"{meta['database']} (mean ± std, {meta['seeds']} seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(database, out, settings=("st", "nc", "c-printed", "c-recommended"), seeds=3, methods=(), ablation=None, forms=("printed",),
            data=None, config_file=None, extra=None, verbose=0, folds=None) -> str:
    """Runs the comparison over ``seeds`` (a count or a list), or over cross-validation ``folds`` (a list), and
    returns the markdown table (also written to ``out/results.md``)."""
    out = Path(out)
    rows = plan(settings, methods, ablation, forms)
    seed_list = list(folds) if folds else list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    for row in rows:  # every row's configuration is checked before anything is written
        for _, overrides in row.runs:
            fold = {"fold": seed_list[0]} if folds else {}
            config_lib.resolve(database, config_file, {**row_extra(extra, overrides), **overrides, **fold,
                                                        "seed": seed_list[0] if seed_list else 0, "data": data})
    out.mkdir(parents=True, exist_ok=True)
    records = run_all(database, out, rows, seed_list, data, config_file, extra, verbose, folds=bool(folds))
    primary = config_lib.resolve(database, config_file, {**(extra or {}), "data": data})["primary_metrics"]
    table = summarise(records, rows, primary)
    meta = {"database": database, "seeds": len(seed_list), "folds": list(folds or []), "settings": list(settings),
            "methods": list(methods),
            "ablation": ablation, "forms": list(forms), "overrides": extra or {},
            "conflict_curves": conflict_curves(out, rows, seed_list, bool(folds))}
    write_results(out, records, table, primary, meta)
    return (out / "results.md").read_text()
