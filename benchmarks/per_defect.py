"""Per defect type metrics of saved evaluations, side by side (one column group per evaluation folder).

    python benchmarks/per_defect.py runs/standins/grain/ddad/eval-ddad10 runs/standins/grain/patchcore

Each defect type is scored against all good images (image AUROC); pixel AUROC and PRO over those images. The same
numbers as the "Per defect type" table of `ddad report`.
"""
import argparse
from pathlib import Path

from ddad.report import load_evaluation, per_defect_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("evals", nargs="+", help="evaluation folders (scores.json, maps.npy, masks.npy)")
    ap.add_argument("--names", help="comma list of column names (default: the folder names)")
    a = ap.parse_args()
    names = a.names.split(",") if a.names else [f"{Path(e).parent.name}/{Path(e).name}" for e in a.evals]
    tables = [per_defect_metrics(*load_evaluation(e)) for e in a.evals]
    types = sorted(set().union(*tables))
    print("| defect | n | " + " | ".join(f"{n} I-AUROC | {n} P-AUROC | {n} PRO" for n in names) + " |")
    print("|---|---|" + "---|---|---|" * len(names))
    for t in types:
        n = next(tb[t][0] for tb in tables if t in tb)
        cells = []
        for tb in tables:
            vals = tb.get(t, (0, None, None, None))[1:]
            cells += ["-" if v is None else f"{100 * v:.1f}" for v in vals]
        print(f"| {t} | {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
