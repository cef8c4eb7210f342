"""Coupling calibration: which reading of L_DM / L_SCA to recommend, chosen by a rule fixed before measuring.

Databases (all built here from what is in ../shared/data or built in):
* ``demo``: the procedural demo (expressions x AUs, Du et al. 2014 relatedness, non-overlapping parts);
* ``celeba-hair``: a real Case II analogue from the CelebA subset: the class task is hair colour (black / blond /
  brown / gray, images with exactly one of them), the attributes are the other 36; the training identities are
  split in two halves, one labelled for hair colour only and one for the attributes only (no annotation overlap);
  validation and test images keep both; relatedness inferred from the annotations of the validation split
  (the only training-time split whose images carry both tasks' labels).

Every candidate of :data:`dmtl.coupling.CANDIDATES` and NC MT run over the same seeds through ``dmtl compare``.

The rule (from the issue, fixed before running): among the candidates that beat NC MT on both tasks (mean over
seeds of the database's primary metrics) on every calibration database, ``recommended`` is the one with the
largest worst-task gain (min over the two tasks of C - NC), averaged over the databases. If none qualifies,
``recommended`` is ``printed``.

    python bench/coupling_calibration.py --seeds 3 --out runs/calibration
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


def celeba_hair_csv(celeba_root: Path, out_csv: Path, seed: int = 0) -> dict:
    """Writes the Case II analogue as a generic CSV database (images relative to the CelebA root)."""
    lines = (celeba_root / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    images = [r[0] for r in rows]
    values = (np.array([[int(v) for v in r[1:]] for r in rows]) > 0).astype(int)
    identity = dict(line.split() for line in (celeba_root / "identity_CelebA.txt").read_text().splitlines() if line)
    partition = dict(line.split() for line in (celeba_root / "list_eval_partition.txt").read_text().splitlines()
                     if line)
    hair = [names.index(h) for h in HAIR]
    attributes = [i for i, n in enumerate(names) if n not in HAIR]
    one_colour = values[:, hair].sum(1) == 1
    ids = sorted({identity[im] for im in images})
    rng = np.random.default_rng(seed)
    class_half = set(rng.permutation(ids)[: len(ids) // 2].tolist())
    split_name = {"0": "train", "1": "val", "2": "test"}
    header = ["image", "split", "subject", "class", *[names[i] for i in attributes]]
    out = [",".join(header)]
    counts = {"train_classes_only": 0, "train_attributes_only": 0, "val": 0, "test": 0}
    for i in np.flatnonzero(one_colour):
        image, split = images[i], split_name[partition[images[i]]]
        label = HAIR[int(np.argmax(values[i, hair]))].replace("_Hair", "").lower()
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


def apply_rule(tables: dict, candidates) -> dict:
    """The fixed rule over ``{database: {row label: {task: mean}}}``; returns the decision and its numbers."""
    gains, qualifies = {}, {}
    for name in candidates:
        per_db = []
        ok = True
        for database, table in tables.items():
            c, nc = table[name], table["nc"]
            deltas = {task: c[task] - nc[task] for task in ("classes", "attributes")}
            ok &= all(d > 0 for d in deltas.values())
            per_db.append(min(deltas.values()))
        gains[name], qualifies[name] = float(np.mean(per_db)), bool(ok)
    qualified = [n for n in candidates if qualifies[n]]
    chosen = max(qualified, key=lambda n: gains[n]) if qualified else "printed"
    return {"recommended": chosen, "qualified": qualified, "mean_worst_task_gain": gains, "beats_nc_on_both": qualifies}


def main(argv=None) -> int:
    from dmtl.coupling import CANDIDATES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "calibration")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--databases", default="demo,celeba-hair")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "coupling_calibration.json")
    args = p.parse_args(argv)
    settings = ",".join(["nc", *[f"c-{name}" for name in CANDIDATES]])
    tables = {}
    for database in args.databases.split(","):
        out = args.out / database
        if database == "demo":
            dmtl("compare", "--database", "demo", "--out", str(out), "--settings", settings,
                 "--seeds", str(args.seeds))
        elif database == "celeba-hair":
            root = SHARED / "celeba-subset"
            csv = args.out / "celeba-hair.csv"
            counts = celeba_hair_csv(root, csv)
            print("celeba-hair:", counts, flush=True)
            data = args.out / "celeba-hair-data"
            if not (data / "dataset.json").is_file():
                dmtl("build", "--database", "csv", "--root", str(root), "--out", str(data), "--detector", "none",
                     "--size", "48", "--workers", "0", "--no-progress", "--set", f"option.csv={csv.resolve()}")
            dmtl("compare", "--database", "csv", "--data", str(data), "--out", str(out), "--settings", settings,
                 "--seeds", str(args.seeds), "--set", "relatedness=empirical", "--set", "relatedness_split=val", "--set", "input_size=48",
                 "--set", "epochs=8", "--set", "batch_size=64")
        else:
            raise SystemExit(f"unknown calibration database {database!r}")
        result = json.loads((out / "results.json").read_text())
        primary = {"classes": "accuracy", "attributes": "mean_f1"}
        table = {}
        for entry in result["table"]:
            label = entry["label"]
            key = "nc" if label == "NC MT" else next(
                (n for n in CANDIDATES if label in (f"C MT ({n})", "C MT (as printed)" if n == "printed" else "")),
                label)
            table[key] = {task: entry[f"{task}_{primary[task]}"][0] for task in primary}
            table[key]["std"] = {task: entry[f"{task}_{primary[task]}"][1] for task in primary}
        tables[database] = table
    decision = apply_rule(tables, list(CANDIDATES))
    report = {"seeds": list(range(args.seeds)), "databases": list(tables), "tables": tables, **decision,
              "rule": "among candidates beating NC MT on both tasks on every database, the largest mean (over "
                      "databases) of min over tasks of (C - NC); none: printed"}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2))
    args.results.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    """The calibration table: mean ± std over seeds per database, the worst-task gain over NC MT, the decision."""
    databases = report["databases"]
    head = " | ".join(f"{db}: classes | {db}: attributes" for db in databases)
    lines = [f"Seeds {report['seeds']}; classes = accuracy, attributes = mean F1 at 0.5 (test split); "
             f"mean ± std over seeds.", "", f"| recipe | {head} | mean worst-task gain vs NC | beats NC on both, "
             f"every database |", "|---|" + "---|" * (2 * len(databases) + 2)]
    for name in ["nc", *report["mean_worst_task_gain"]]:
        cells = []
        for db in databases:
            row = report["tables"][db][name]
            cells += [f"{row[t]:.3f} ± {row['std'][t]:.3f}" for t in ("classes", "attributes")]
        gain = "–" if name == "nc" else f"{report['mean_worst_task_gain'][name]:+.3f}"
        ok = "–" if name == "nc" else ("yes" if report["beats_nc_on_both"][name] else "no")
        lines.append(f"| {'NC MT' if name == 'nc' else name} | {' | '.join(cells)} | {gain} | {ok} |")
    chosen = report["recommended"]
    lines += ["", f"Rule: {report['rule']}.", "",
              f"Outcome: recommended = **{chosen}**" + ("" if report["qualified"] else
                                                        " (no candidate qualified)") + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
