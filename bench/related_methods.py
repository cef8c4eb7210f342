"""The related methods beside ST, NC MT and the default C MT on the demo and two CelebA databases: MTPSL, AAL, the
joint-distribution GAN (JDL), JTR, KD-MTL, S-T NC MT and self-adaptive pseudo-labelling (SA-PL), each at its paper's
defaults, through ``dmtl compare`` over the same seeds.

Databases and protocol as in ``bench/coupling_calibration.py`` (``celeba-hair``: hair colour x 36 attributes;
``celeba-gender-age``: Male x Young x 38 attributes; identity halves with no annotation overlap, 48 px, 8 epochs;
``ew``, couplings outside the weighting), so the ST / NC MT / C MT runs of the calibration are the same runs (a
comparison resumes them when its folder holds them). AAL pairs, fixed before measuring: on CelebA the paper's
Straight_Hair / Big_Lips (Big Lips is the worst partner of 30 of the 40 attributes in the AAL paper); on the demo
AU12 / AU4 (lip-corner puller vs brow lowerer, not chosen from results). KD-MTL, S-T NC MT and SA-PL learn from the
ST row's runs of the same seed. Nothing here is tuned.

    python bench/related_methods.py --seeds 3 --out runs/related
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coupling_calibration import REPO, dmtl, prepare_database  # noqa: E402

PAIRS = {"demo": "[[AU12, AU4]]", "celeba-hair": "[[Straight_Hair, Big_Lips]]",
         "celeba-gender-age": "[[Straight_Hair, Big_Lips]]"}
METHODS = "st-t,mtpsl,aal,jdl,jtr,kd-mtl,sa-pl"
SETTINGS = "st,nc,c-recommended"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "related")
    p.add_argument("--data-root", type=Path, default=None,
                   help="where the CelebA databases are built (default: --out; the calibration's folder reuses them)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--databases", default="demo,celeba-hair,celeba-gender-age")
    p.add_argument("--settings", default=SETTINGS, help="rows besides the methods")
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--collect", action="store_true", help="only read finished comparisons into the report")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "related_methods.json")
    args = p.parse_args(argv)
    report = {}
    for database in args.databases.split(","):
        if database not in PAIRS:
            raise SystemExit(f"unknown database {database!r} (choose from {sorted(PAIRS)})")
        out = args.out / database
        if not args.collect:
            selected = prepare_database(database, args.data_root or args.out)
            dmtl("compare", *selected, "--out", str(out), "--settings", args.settings, "--methods", args.methods,
                 "--seeds", str(args.seeds), "--set", "weighting=ew", "--set", "coupling_placement=outside",
                 "--set", f"auxiliary.aal.pairs={PAIRS[database]}")
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
