"""The related methods beside NC MT (and ST) on the demo and on the CelebA subset: MTPSL, AAL and the
joint-distribution GAN (JDL), each at its paper's defaults, through ``dmtl compare`` over the same seeds.

Databases as in ``bench/coupling_calibration.py`` (``celeba-hair``: hair colour x 36 attributes, identity halves
with no annotation overlap, 48 px, 8 epochs). AAL pairs, fixed before measuring: on CelebA the paper's Straight_Hair
/ Big_Lips (Big Lips is the worst partner of 30 of the 40 attributes in the AAL paper); on the demo AU12 / AU4
(lip-corner puller vs brow lowerer, not chosen from results). Nothing here is tuned.

    python bench/related_methods.py --seeds 3 --out runs/related
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coupling_calibration import CELEBA, REPO, SHARED, celeba_csv, dmtl  # noqa: E402

PAIRS = {"demo": "[[AU12, AU4]]", "celeba-hair": "[[Straight_Hair, Big_Lips]]"}
METHODS = "mtpsl,aal,jdl"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "related")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--databases", default="demo,celeba-hair")
    p.add_argument("--settings", default="nc", help="rows besides the methods (st,nc,...)")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "related_methods.json")
    args = p.parse_args(argv)
    report = json.loads(args.results.read_text()) if args.results.is_file() else {}
    for database in args.databases.split(","):
        out = args.out / database
        common = ["--settings", args.settings, "--methods", METHODS, "--seeds", str(args.seeds),
                  "--set", f"auxiliary.aal.pairs={PAIRS[database]}"]
        if database == "demo":
            dmtl("compare", "--database", "demo", "--out", str(out), *common)
        elif database == "celeba-hair":
            root = SHARED / "celeba-subset"
            csv = args.out / "celeba-hair.csv"
            celeba_csv(root, csv, *CELEBA["celeba-hair"])
            data = args.out / "celeba-hair-data"
            if not (data / "dataset.json").is_file():
                dmtl("build", "--database", "csv", "--root", str(root), "--out", str(data), "--detector", "none",
                     "--size", "48", "--workers", "0", "--no-progress", "--set", f"option.csv={csv.resolve()}")
            dmtl("compare", "--database", "csv", "--data", str(data), "--out", str(out), *common,
                 "--set", "relatedness=empirical", "--set", "relatedness_split=val", "--set", "input_size=48",
                 "--set", "epochs=8", "--set", "batch_size=64")
        else:
            raise SystemExit(f"unknown database {database!r}")
        result = json.loads((out / "results.json").read_text())
        report[database] = {"seeds": list(range(args.seeds)), "aal_pairs": PAIRS[database],
                            "rows": {e["label"]: {"classes_accuracy": e["classes_accuracy"],
                                                  "attributes_mean_f1": e["attributes_mean_f1"]}
                                     for e in result["table"]}}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2))
    lines = ["# Related methods (mean ± std over seeds; test split)", ""]
    for database, entry in report.items():
        lines += [f"## {database} (seeds {entry['seeds']}, AAL pairs {entry['aal_pairs']})", "",
                  "| row | class accuracy | attribute mean F1 |", "|---|---|---|"]
        for label, row in entry["rows"].items():
            (ca, cs), (fa, fs) = row["classes_accuracy"], row["attributes_mean_f1"]
            lines.append(f"| {label} | {ca:.3f} ± {cs:.3f} | {fa:.3f} ± {fs:.3f} |")
        lines.append("")
    args.results.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
