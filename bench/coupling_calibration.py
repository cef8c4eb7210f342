"""Coupling calibration: which reading of L_DM / L_SCA to recommend, chosen by a rule fixed before measuring.

Databases (all built here from what is in ../shared/data or built in):
* ``demo``: the procedural demo (expressions x AUs, Du et al. 2014 relatedness, non-overlapping parts);
  relatedness informative (domain knowledge: the AU columns are 0/1 indicators of the expressions);
* ``celeba-gender-age``: a real database with strongly related tasks from the CelebA subset: the class task is
  gender x age (Male / Young: 4 classes), the attributes are the other 38 (beards, make-up, baldness, grey hair
  are tied to it); informative;
* ``celeba-hair``: a real Case II analogue from the CelebA subset: the class task is hair colour (black / blond /
  brown / gray, images with exactly one of them), the attributes are the other 36; weakly related.
In both CelebA databases the training identities are split in two halves, one labelled for the class task only
and one for the attributes only (no annotation overlap); validation and test images keep both; relatedness is
inferred from the annotations of the validation split (the only training-time split whose images carry both).

Every recipe of :data:`dmtl.coupling.CALIBRATED` (the four readings and their relatedness-aware variants; never
``printed``) and NC MT run over the same seeds through ``dmtl compare``.

The rule (issue 20, fixed before running): a candidate qualifies if (i) on every calibration database it is not
below NC MT on either task by more than max(one NC MT standard deviation, 0.005), and (ii) it beats NC MT on both
tasks on every database whose relatedness is informative (:data:`INFORMATIVE`). ``recommended`` = the qualifying
candidate with the largest mean (over databases) worst-task gain over NC MT (min over the two tasks of C - NC).
If none qualifies, ``recommended`` = the candidate with the smallest worst-case loss to NC MT over every database
and task (the largest min over databases and tasks of C - NC).

    python bench/coupling_calibration.py --seeds 3 --out runs/calibration

``--reuse PREVIOUS.json`` takes the rows of recipes already measured by an earlier calibration (same seeds, same
database) from that file instead of training them again, but only after re-running NC MT there and finding it
equal to the earlier NC MT row to 1e-6 on every number (the code path unchanged); the report lists what it reused.
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
DATABASES = ("demo", "celeba-gender-age", "celeba-hair")
INFORMATIVE = ("demo", "celeba-gender-age")
"""The calibration databases whose relatedness carries information about the other task (fixed with the rule)."""
TASKS = ("classes", "attributes")


def hair_colour(row: dict):
    """celeba-hair's class: the one hair colour of an image with exactly one, else None (left out)."""
    colours = [h for h in HAIR if row[h]]
    return colours[0].replace("_Hair", "").lower() if len(colours) == 1 else None


def gender_age(row: dict):
    """celeba-gender-age's class: Male x Young."""
    return f"{'male' if row['Male'] else 'female'}-{'young' if row['Young'] else 'old'}"


CELEBA = {"celeba-hair": (hair_colour, HAIR), "celeba-gender-age": (gender_age, ("Male", "Young"))}


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
    """The fixed rule over ``{database: {row: {task: mean, "std": {task: std}}}}``; returns the decision and
    every number it used."""
    gains, no_harm, beats, worst_loss = {}, {}, {}, {}
    for name in candidates:
        per_db, ok_harm, ok_beats, deltas_all = [], True, True, []
        for database, table in tables.items():
            c, nc = table[name], table["nc"]
            deltas = {task: c[task] - nc[task] for task in TASKS}
            ok_harm &= all(deltas[t] >= -max(nc["std"][t], 0.005) for t in TASKS)
            if database in informative:
                ok_beats &= all(deltas[t] > 0 for t in TASKS)
            per_db.append(min(deltas.values()))
            deltas_all += list(deltas.values())
        gains[name], no_harm[name], beats[name] = float(np.mean(per_db)), bool(ok_harm), bool(ok_beats)
        worst_loss[name] = float(min(deltas_all))
    qualified = [n for n in candidates if no_harm[n] and beats[n]]
    if qualified:
        chosen = max(qualified, key=lambda n: gains[n])
        failed = None
    else:
        chosen = max(candidates, key=lambda n: worst_loss[n])
        failed = ("(i) no harm: " + ", ".join(n for n in candidates if not no_harm[n]) + " fail it; "
                  "(ii) beats NC MT on the informative databases: " + ", ".join(n for n in candidates
                                                                               if not beats[n]) + " fail it")
    return {"recommended": chosen, "qualified": qualified, "mean_worst_task_gain": gains, "no_harm": no_harm,
            "beats_nc_where_informative": beats, "worst_case_change": worst_loss, "failed": failed}


def calibrate_database(database: str, out: Path, settings: str, seeds: int) -> Path:
    """Runs ``dmtl compare`` for one calibration database; returns its results folder."""
    target = out / database
    if database == "demo":
        dmtl("compare", "--database", "demo", "--out", str(target), "--settings", settings, "--seeds", str(seeds))
        return target
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
    dmtl("compare", "--database", "csv", "--data", str(data), "--out", str(target), "--settings", settings,
         "--seeds", str(seeds), "--set", "relatedness=empirical", "--set", "relatedness_split=val",
         "--set", "input_size=48", "--set", "epochs=8", "--set", "batch_size=64")
    return target


def read_table(results: Path, candidates) -> dict:
    """``{row: {task: mean, "std": {task: std}}}`` from a compare's results.json (primary metrics)."""
    result = json.loads((results / "results.json").read_text())
    primary = {"classes": "accuracy", "attributes": "mean_f1"}
    labels = {"NC MT": "nc", **{f"C MT ({n})": n for n in candidates}}
    table = {}
    for entry in result["table"]:
        key = labels.get(entry["label"], entry["label"])
        table[key] = {task: entry[f"{task}_{primary[task]}"][0] for task in TASKS}
        table[key]["std"] = {task: entry[f"{task}_{primary[task]}"][1] for task in TASKS}
    return table


def relatedness_strength(results: Path) -> float | None:
    """The mean correlation ratio a coupled run of this database reported (relatedness_report.json)."""
    for report in sorted(results.glob("runs/**/relatedness_report.json")):
        return json.loads(report.read_text())["mean_correlation_ratio"]
    return None


def main(argv=None) -> int:
    from dmtl.coupling import CALIBRATED

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "calibration")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--databases", default=",".join(DATABASES))
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "coupling_calibration.json")
    p.add_argument("--reuse", type=Path, help="an earlier calibration's JSON whose rows may be reused (see above)")
    p.add_argument("--collect", nargs="*", type=Path, metavar="REPORT",
                   help="train nothing: apply the rule to the comparisons already in --out, or to the tables of "
                        "these calibration reports (databases calibrated by separate processes)")
    args = p.parse_args(argv)
    candidates = list(CALIBRATED)
    previous = json.loads(args.reuse.read_text()) if args.reuse else {"tables": {}, "seeds": None}
    tables, strength, reused = {}, {}, {}
    for database in args.databases.split(","):
        if args.collect is not None:
            report = next((json.loads(f.read_text()) for f in args.collect
                           if database in json.loads(f.read_text())["tables"]), None)
            if report is not None:
                tables[database] = report["tables"][database]
                strength[database] = report["mean_correlation_ratio"][database]
                reused[database] = report.get("reused", {}).get(database, [])
                previous["reused_from"] = report.get("reused_from") or previous.get("reused_from")
            else:
                results = args.out / database
                tables[database], strength[database], reused[database] = (read_table(results, candidates),
                                                                           relatedness_strength(results), [])
            continue
        old = previous["tables"].get(database, {}) if previous["seeds"] == list(range(args.seeds)) else {}
        keep = [n for n in candidates if n in old and "nc" in old]
        todo = [n for n in candidates if n not in keep]
        settings = ",".join(["nc", *[f"c-{name}" for name in todo]])
        results = calibrate_database(database, args.out, settings, args.seeds)
        table = read_table(results, candidates)
        if keep and not all(abs(table["nc"][t] - old["nc"][t]) <= 1e-6
                            and abs(table["nc"]["std"][t] - old["nc"]["std"][t]) <= 1e-6 for t in TASKS):
            print(f"{database}: NC MT differs from the earlier calibration ({table['nc']} vs {old['nc']}): "
                  f"nothing reused, training every candidate", flush=True)
            settings = ",".join(["nc", *[f"c-{name}" for name in candidates]])
            table, keep = read_table(calibrate_database(database, args.out, settings, args.seeds), candidates), []
        table.update({n: old[n] for n in keep})
        tables[database], strength[database], reused[database] = table, relatedness_strength(results), keep
    decision = apply_rule(tables, candidates, [d for d in INFORMATIVE if d in tables])
    report = {"seeds": list(range(args.seeds)), "databases": list(tables), "informative": list(INFORMATIVE),
              "mean_correlation_ratio": strength, "tables": tables, "reused": reused,
              "reused_from": str(args.reuse) if args.reuse else previous.get("reused_from"), **decision,
              "rule": "qualifies: (i) on every database not below NC MT on either task by more than max(NC MT std, "
                      "0.005), (ii) above NC MT on both tasks on every informative database; recommended = the "
                      "qualifying candidate with the largest mean (over databases) of min over tasks of (C - NC); "
                      "none: the candidate with the largest min over databases and tasks of (C - NC)"}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2))
    args.results.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    """The calibration table: mean ± std over seeds per database, the rule's numbers, the decision."""
    databases = report["databases"]
    head = " | ".join(f"{db}: classes | {db}: attributes" for db in databases)
    strength = ", ".join(f"{db} {report['mean_correlation_ratio'][db]:.3f}" for db in databases
                         if report["mean_correlation_ratio"].get(db) is not None)
    lines = [f"Seeds {report['seeds']}; classes = accuracy, attributes = mean F1 at 0.5 (test split); "
             f"mean ± std over seeds. Informative relatedness: {', '.join(report['informative'])} "
             f"(mean correlation ratio: {strength}).", "",
             f"| recipe | {head} | mean worst-task gain vs NC | worst change vs NC | (i) no harm | "
             f"(ii) beats NC where informative |", "|---|" + "---|" * (2 * len(databases) + 4)]
    for name in ["nc", *report["mean_worst_task_gain"]]:
        cells = []
        for db in databases:
            row = report["tables"][db][name]
            mark = " †" if name in report.get("reused", {}).get(db, ()) else ""
            cells += [f"{row[t]:.3f} ± {row['std'][t]:.3f}{mark}" for t in TASKS]
        if name == "nc":
            extra = ["–"] * 4
        else:
            extra = [f"{report['mean_worst_task_gain'][name]:+.3f}", f"{report['worst_case_change'][name]:+.3f}",
                     "yes" if report["no_harm"][name] else "no",
                     "yes" if report["beats_nc_where_informative"][name] else "no"]
        lines.append(f"| {'NC MT' if name == 'nc' else name} | {' | '.join(cells + extra)} |")
    chosen = report["recommended"]
    if any(report.get("reused", {}).values()):
        lines += ["", f"† taken from the earlier calibration ({report['reused_from']}) after NC MT, re-run, "
                      f"reproduced its row to 1e-6 on that database."]
    lines += ["", f"Rule: {report['rule']}.", "",
              f"Outcome: recommended = **{chosen}**" + (
                  f" (qualified: {', '.join(report['qualified'])})." if report["qualified"] else
                  f" (no candidate qualified: {report['failed']}; chosen by the smallest worst-case loss).")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
