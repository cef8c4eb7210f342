"""Coupling calibration (the third, issue 30): which recipe x weighting x placement to recommend, chosen by a rule
fixed in this file before measuring.

Databases (all built here from what is in ../shared/data or built in), and whether their relatedness is
informative (fixed before measuring, :data:`INFORMATIVE`):
* ``demo``: the procedural demo (expressions x AUs, Du et al. 2014 relatedness, non-overlapping parts);
  informative (the AU columns are 0/1 indicators of the expressions);
* ``celeba-gender-age``: from the CelebA subset, the class is gender x age (Male / Young: 4 classes), the attributes
  the other 38 (beards, make-up, baldness, grey hair are tied to it); informative;
* ``celeba-hair``: a Case II analogue, the class is hair colour (black / blond / brown / gray, images with exactly
  one), the attributes the other 36; weakly related: not informative;
* ``celeba-look``: a hard class task (the first calibrations had none): attractive x young x smiling x wavy hair
  (16 classes, each a subtle judgement), the attributes the other 36; partly informative (smiling explains the
  mouth and cheekbone attributes, age the grey hair and baldness; the colours and accessories not at all), so, like the
  held-out clothing database whose class head is wrong more than half the time, it tests that a coupling does no
  harm where its teacher is weak: not counted as informative.
In the CelebA databases the training identities are split in two halves, one labelled for the class task only and
one for the attributes only (no annotation overlap); validation and test images keep both; relatedness is inferred
from the annotations of the validation split (the only training-time split whose images carry both).

Candidates (:data:`CANDIDATES`): the recipes {symmetric-informed (the current recommendation), symmetric-reliable,
distil-both-reliable (teacher reliability, issue 30)} x weightings {ew, famo} x placements {outside, student}; with
``ew`` the placements coincide, so 9 candidates. Beside them NC MT under each weighting and ST. Every database runs
through ``dmtl compare`` once per (weighting, placement). The reliability forms use the issue's measure (a teacher is
compared with its student: ``reliability_reference: student``); ``reliability_reference: prior`` (compared with an
uninformed predictor of the validation base rates) is not a candidate: decided before this run, for the budget (12
runs per database and seed already), and so that the candidates are the ones the issue fixed, not ones chosen after
the first look (bench/results/reliability_first_look.md).

Pruning (fixed before running): after seed 0 on every database, a candidate more than :data:`PRUNE` below NC MT
(ew) on either task on any database is dropped; the others, NC MT and ST run the remaining seeds. The report lists
what was pruned and its seed-0 numbers.

The rule: a candidate qualifies if (i) on every database it is not below NC MT (ew) on either task by more than
max(one NC MT std, 0.005), and (ii) it is above NC MT (ew) on both tasks on every informative database.
``recommended`` = the qualifying candidate with the largest mean over databases of min over tasks of
(C - max(ST, NC MT (ew))); if none qualifies, the one with the smallest worst-case loss to NC MT (ew) over every
database and task, and the report says which condition failed where.

    python bench/coupling_calibration.py --seeds 3 --out runs/calibration

``--collect`` trains nothing and applies the rule to the comparisons already in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DMTL_SHARED_DATA", REPO.parent / "shared" / "data"))
HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
DATABASES = ("demo", "celeba-gender-age", "celeba-hair", "celeba-look")
INFORMATIVE = ("demo", "celeba-gender-age")
"""The calibration databases whose relatedness carries information about the other task (fixed with the rule)."""
TASKS = ("classes", "attributes")
RECIPES = ("symmetric-informed", "symmetric-reliable", "distil-both-reliable")
WEIGHTINGS = ("ew", "famo")
PLACEMENTS = ("outside", "student")
GROUPS = [(w, p) for w in WEIGHTINGS for p in PLACEMENTS if not (w == "ew" and p == "student")]
"""(weighting, placement) of each ``dmtl compare`` per database; with ew the placements coincide."""
CANDIDATES = [f"{r}/{w}/{p}" for w, p in GROUPS for r in RECIPES]
PRUNE = 0.03
"""Seed 0: a candidate this far below NC MT (ew) on either task on any database is not run on further seeds."""


def hair_colour(row: dict):
    """celeba-hair's class: the one hair colour of an image with exactly one, else None (left out)."""
    colours = [h for h in HAIR if row[h]]
    return colours[0].replace("_Hair", "").lower() if len(colours) == 1 else None


def gender_age(row: dict):
    """celeba-gender-age's class: Male x Young."""
    return f"{'male' if row['Male'] else 'female'}-{'young' if row['Young'] else 'old'}"


LOOK = ("Attractive", "Young", "Smiling", "Wavy_Hair")


def look(row: dict):
    """celeba-look's class: attractive x young x smiling x wavy hair (16 classes; with 3 of them, 8 classes, the
    single-task class head reached 0.54 validation accuracy at the calibration scale, above the 0.5 asked for)."""
    return "-".join(("attractive" if row["Attractive"] else "plain", "young" if row["Young"] else "old",
                     "smiling" if row["Smiling"] else "neutral", "wavy" if row["Wavy_Hair"] else "straight"))


CELEBA = {"celeba-hair": (hair_colour, HAIR), "celeba-gender-age": (gender_age, ("Male", "Young")),
          "celeba-look": (look, LOOK)}


def celeba_csv(celeba_root: Path, out_csv: Path, class_of, class_attributes, seed: int = 0) -> dict:
    """Writes a CelebA task pair as a generic CSV database (images relative to the CelebA root): the class from
    ``class_of(row)`` (None: image left out), the attributes = the 40 less ``class_attributes``; the training
    identities split in two seeded halves (class labels only / attribute labels only)."""
    lines = (celeba_root / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    images = [r[0] for r in rows]
    values = (np.array([[int(v) for v in r[1:]] for r in rows]) > 0).astype(int)
    identity = dict(line.split() for line in (celeba_root / "identity_CelebA.txt").read_text().splitlines() if line)
    partition = dict(line.split() for line in (celeba_root / "list_eval_partition.txt").read_text().splitlines()
                     if line)
    attributes = [i for i, n in enumerate(names) if n not in class_attributes]
    ids = sorted({identity[im] for im in images})
    rng = np.random.default_rng(seed)
    class_half = set(rng.permutation(ids)[: len(ids) // 2].tolist())
    split_name = {"0": "train", "1": "val", "2": "test"}
    header = ["image", "split", "subject", "class", *[names[i] for i in attributes]]
    out = [",".join(header)]
    counts = {"train_classes_only": 0, "train_attributes_only": 0, "val": 0, "test": 0}
    for i, image in enumerate(images):
        label = class_of(dict(zip(names, values[i])))
        if label is None:
            continue
        split = split_name[partition[image]]
        attrs = [str(values[i, j]) for j in attributes]
        if split == "train":
            if identity[image] in class_half:
                attrs, key = [""] * len(attributes), "train_classes_only"
            else:
                label, key = "", "train_attributes_only"
        else:
            key = split
        counts[key] += 1
        out.append(",".join([f"img_align_celeba/{image}", split, identity[image], label, *attrs]))
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    out_csv.write_text("\n".join(out) + "\n")
    return counts


def dmtl(*args):
    print("$ dmtl " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "dmtl", *args], check=True)


def apply_rule(tables: dict, candidates, informative=INFORMATIVE) -> dict:
    """The fixed rule over ``{database: {row: {task: mean, "std": {task: std}}}}`` (rows: the candidates, ``nc``
    = NC MT (ew), ``st`` = ST); returns the decision and every number it used."""
    gains, no_harm, beats, worst, failures = {}, {}, {}, {}, {}
    for name in candidates:
        per_db, ok_harm, ok_beats, deltas_all, failed = [], True, True, [], []
        for database, table in tables.items():
            c, nc, st = table[name], table["nc"], table.get("st", table["nc"])
            deltas = {task: c[task] - nc[task] for task in TASKS}
            for t in TASKS:
                if deltas[t] < -max(nc["std"][t], 0.005):
                    ok_harm = False
                    failed.append(f"(i) {database} {t} {deltas[t]:+.3f}")
                if database in informative and not deltas[t] > 0:
                    ok_beats = False
                    failed.append(f"(ii) {database} {t} {deltas[t]:+.3f}")
            per_db.append(min(c[t] - max(st[t], nc[t]) for t in TASKS))
            deltas_all += list(deltas.values())
        gains[name], no_harm[name], beats[name] = float(np.mean(per_db)), bool(ok_harm), bool(ok_beats)
        worst[name], failures[name] = float(min(deltas_all)), failed
    qualified = [n for n in candidates if no_harm[n] and beats[n]]
    chosen = max(qualified, key=lambda n: gains[n]) if qualified else max(candidates, key=lambda n: worst[n])
    return {"recommended": chosen, "qualified": qualified, "mean_worst_task_gain_vs_best_baseline": gains,
            "no_harm": no_harm, "beats_nc_where_informative": beats, "worst_case_change": worst,
            "failed_where": failures}


def prune(tables: dict, candidates) -> dict:
    """``{candidate: reason}`` of the candidates the seed-0 tables drop (:data:`PRUNE`)."""
    out = {}
    for name in candidates:
        for database, table in tables.items():
            for t in TASKS:
                delta = table[name][t] - table["nc"][t]
                if delta < -PRUNE and name not in out:
                    out[name] = f"{database} {t} {delta:+.3f} at seed 0"
    return out


def prepare_database(database: str, out: Path) -> list[str]:
    """The ``dmtl compare`` arguments that select the database (building a CelebA one first)."""
    if database == "demo":
        return ["--database", "demo"]
    if database not in CELEBA:
        raise SystemExit(f"unknown calibration database {database!r} (choose from {DATABASES})")
    root = SHARED / "celeba-subset"
    csv = out / f"{database}.csv"
    class_of, class_attributes = CELEBA[database]
    print(f"{database}:", celeba_csv(root, csv, class_of, class_attributes), flush=True)
    data = out / f"{database}-data"
    if not (data / "dataset.json").is_file():
        dmtl("build", "--database", "csv", "--root", str(root), "--out", str(data), "--detector", "none",
             "--size", "48", "--workers", "0", "--no-progress", "--set", f"option.csv={csv.resolve()}")
    return ["--database", "csv", "--data", str(data), "--set", "relatedness=empirical", "--set",
            "relatedness_split=val", "--set", "input_size=48", "--set", "epochs=8", "--set", "batch_size=64"]


def run_group(database: str, out: Path, group, recipes, seeds: int, baselines: bool) -> Path:
    """One ``dmtl compare`` of a database for one (weighting, placement): NC MT (and ST with ew) and the coupled
    rows of ``recipes``."""
    weighting, placement = group
    settings = [*(["st"] if baselines and weighting == "ew" else []),
                *(["nc"] if baselines and placement == "outside" else []), *[f"c-{r}" for r in recipes]]
    target = out / database / f"{weighting}-{placement}"
    if settings:
        dmtl("compare", *prepare_database(database, out), "--out", str(target), "--settings", ",".join(settings),
             "--seeds", str(seeds), "--set", f"weighting={weighting}", "--set", f"coupling_placement={placement}")
    return target


def read_group(results: Path, group) -> dict:
    """``{row: {task: mean, "std": {task: std}}}`` of one group's compare (candidates named recipe/w/p)."""
    if not (results / "results.json").is_file():
        return {}
    weighting, placement = group
    primary = {"classes": "accuracy", "attributes": "mean_f1"}
    labels = {"ST": "st", "NC MT": "nc" if weighting == "ew" else f"nc-{weighting}",
              **{f"C MT ({r})": f"{r}/{weighting}/{placement}" for r in RECIPES}}
    table = {}
    for entry in json.loads((results / "results.json").read_text())["table"]:
        key = labels.get(entry["label"])
        if key is not None:
            table[key] = {task: entry[f"{task}_{primary[task]}"][0] for task in TASKS}
            table[key]["std"] = {task: entry[f"{task}_{primary[task]}"][1] for task in TASKS}
            table[key]["seeds"] = entry["n"]
    return table


def read_database(out: Path, database: str) -> dict:
    table = {}
    for group in GROUPS:
        table.update(read_group(out / database / f"{group[0]}-{group[1]}", group))
    return table


def couplings_at_the_end(out: Path, database: str) -> dict:
    """Per candidate, the last epoch's gradient cosines (``dmtl compare``'s table: tasks, L_DM vs the attributes,
    L_SCA vs the classes) and teacher-reliability weights (the runs' histories), each a mean over seeds."""
    import csv

    found = {}
    for weighting, placement in GROUPS:
        group = out / database / f"{weighting}-{placement}"
        if not (group / "results.json").is_file():
            continue
        rows = {entry["label"]: entry for entry in json.loads((group / "results.json").read_text())["table"]}
        for recipe in RECIPES:
            entry = rows.get(f"C MT ({recipe})")
            if entry is None:
                continue
            cell = {key[len("conflict_"):]: entry[key][0] for key in entry if key.startswith("conflict_")}
            for column in ("dm_reliability_attributes", "sca_reliability_classes"):
                last = []
                for history in sorted((group / "runs").glob(f"c-{recipe}-seed*/history.csv")):
                    epochs = list(csv.DictReader(history.open()))
                    if epochs and epochs[-1].get(column) not in (None, ""):
                        last.append(float(epochs[-1][column]))
                if last:
                    cell[column] = float(np.mean(last))
            found[f"{recipe}/{weighting}/{placement}"] = cell
    return found


def relatedness_strength(results: Path) -> float | None:
    """The mean correlation ratio a coupled run of this database reported (relatedness_report.json)."""
    for report in sorted(results.glob("**/relatedness_report.json")):
        return json.loads(report.read_text())["mean_correlation_ratio"]
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "calibration")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--databases", default=",".join(DATABASES))
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "coupling_calibration.json")
    p.add_argument("--collect", action="store_true", help="train nothing: apply the rule to what --out holds")
    args = p.parse_args(argv)
    databases = args.databases.split(",")
    if not args.collect:  # seed 0 everywhere, the pruning rule, then the other seeds for what is left
        for database in databases:
            for group in GROUPS:
                run_group(database, args.out, group, RECIPES, 1, True)
    first = {db: read_database(args.out, db) for db in databases}
    pruned = prune(first, [c for c in CANDIDATES if all(c in first[db] for db in databases)])
    if args.collect and args.results.is_file():  # the later seeds' comparisons list the survivors only: keep the
        earlier = json.loads(args.results.read_text())  # pruning and seed-0 tables of the run that pruned
        if earlier.get("databases") == databases and earlier.get("pruned"):
            pruned, first = earlier["pruned"], earlier["seed0_tables"]
    if not args.collect and args.seeds > 1:
        for database in databases:
            for group in GROUPS:
                left = [r for r in RECIPES if f"{r}/{group[0]}/{group[1]}" not in pruned]
                run_group(database, args.out, group, left, args.seeds, True)
    tables = {db: read_database(args.out, db) for db in databases}
    survivors = [c for c in CANDIDATES if c not in pruned and all(c in tables[db] for db in databases)]
    decision = apply_rule(tables, survivors, [d for d in INFORMATIVE if d in tables]) if survivors else {}
    report = {"seeds": list(range(args.seeds)), "databases": databases, "informative": list(INFORMATIVE),
              "candidates": CANDIDATES, "pruned": pruned, "prune_rule": f"seed 0: more than {PRUNE} below NC MT "
              f"(ew) on either task on any database", "seed0_tables": first,
              "mean_correlation_ratio": {db: relatedness_strength(args.out / db) for db in databases},
              "tables": tables, "couplings_at_the_end": {db: couplings_at_the_end(args.out, db) for db in databases},
              **decision,
              "rule": "qualifies: (i) on every database not below NC MT (ew) on either task by more than max(NC MT "
                      "std, 0.005), (ii) above NC MT (ew) on both tasks on every informative database; recommended "
                      "= the qualifying candidate with the largest mean over databases of min over tasks of (C - "
                      "max(ST, NC MT (ew))); none: the smallest worst-case loss to NC MT (ew) over every database "
                      "and task"}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2))
    args.results.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    """The calibration table: mean ± std over seeds per database and task, the rule's numbers, the decision."""
    databases = report["databases"]
    head = " | ".join(f"{db}: classes | {db}: attributes" for db in databases)
    strength = ", ".join(f"{db} {v:.3f}" for db, v in report["mean_correlation_ratio"].items() if v is not None)
    lines = [f"Seeds {report['seeds']}; classes = accuracy, attributes = mean F1 at 0.5 (test split); mean ± std "
             f"over seeds. Informative relatedness: {', '.join(report['informative'])} (mean correlation ratio: "
             f"{strength}). Candidates are recipe/weighting/placement.", "",
             f"| row | {head} | mean min-task gain vs max(ST, NC) | worst change vs NC (ew) | (i) no harm | "
             f"(ii) beats NC where informative |", "|---|" + "---|" * (2 * len(databases) + 4)]
    rows = ["st", "nc", "nc-famo", *[c for c in report["candidates"] if c not in report["pruned"]]]
    gains = report.get("mean_worst_task_gain_vs_best_baseline", {})
    for name in rows:
        cells = []
        for db in databases:
            row = report["tables"][db].get(name)
            cells += [f"{row[t]:.3f} ± {row['std'][t]:.3f}" if row else "–" for t in TASKS]
        extra = ["–"] * 4
        if name in gains:
            extra = [f"{gains[name]:+.3f}", f"{report['worst_case_change'][name]:+.3f}",
                     "yes" if report["no_harm"][name] else "no",
                     "yes" if report["beats_nc_where_informative"][name] else "no"]
        label = {"st": "ST", "nc": "NC MT (ew)", "nc-famo": "NC MT (famo)"}.get(name, name)
        lines.append(f"| {label} | {' | '.join(cells + extra)} |")
    if report["pruned"]:
        lines += ["", f"Pruned after seed 0 ({report['prune_rule']}): " + "; ".join(
            f"{n} ({why})" for n, why in report["pruned"].items()) + "."]
    lines += ["", f"Rule: {report['rule']}."]
    ends = report.get("couplings_at_the_end", {})
    columns = [("grad_cos_tasks", "cos(classes, attributes)"), ("grad_cos_dm_attributes", "cos(L_DM, attributes)"),
               ("grad_cos_sca_classes", "cos(L_SCA, classes)"), ("dm_reliability_attributes", "L_DM reliability"),
               ("sca_reliability_classes", "L_SCA reliability")]
    if any(ends.values()):
        lines += ["", "At the last epoch (mean over seeds; gradient cosines on the shared network, Yu et al. 2020; "
                      "reliability: the teachers' weights, 1 without `reliability`):", "",
                  "| database | candidate | " + " | ".join(label for _, label in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for db, per in ends.items():
            for name, cell in per.items():
                if name in report["pruned"]:
                    continue
                values = [f"{cell[key]:+.3f}" if key in cell and np.isfinite(cell[key]) else "–" for key, _ in columns]
                lines.append(f"| {db} | {name} | " + " | ".join(values) + " |")
    if "recommended" in report:
        chosen = report["recommended"]
        lines += ["", f"Outcome: recommended = **{chosen}**" + (
            f" (qualified: {', '.join(report['qualified'])})." if report["qualified"] else
            " (no candidate qualified; chosen by the smallest worst-case loss). Where each failed: " + "; ".join(
                f"{n}: {', '.join(report['failed_where'][n])}" for n in report["failed_where"]) + ".")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
