"""Analysis (reads the TEST labels): every `--auto` candidate of a trained model scored on its test set, beside the
proxy objective `ddad select` gave it (from the model's selection.json, when there is one).

    python benchmarks/grid_on_test.py runs/standins/grain/ddad [--selection /tmp/x/grain-d9/selection.json]

What it answers: how good the best candidate of the grid is on real (here: stand-in) defects, how far the proxy's
choice is from it, and whether the proxy ranks the candidates as the test set does (Spearman's rho between the proxy
objective, the proxy image AUROC, and the test's image AUROC, and the test's mean of image AUROC, pixel AUROC and PRO). Each group of candidates that
share their terms (Detector.terms_signature) is calibrated as `ddad select` calibrates it (the calibration half of the
held-out images, selection.held_out_split) and its terms measured once on the test images; each candidate is then
recombined from them (selection.recombined_metrics, the numbers `ddad evaluate` gives for that candidate up to the
calibration images: evaluate's model is calibrated on all held-out images). Nothing here feeds back into a choice.
"""
import argparse
import json
from pathlib import Path

import torch
from scipy.stats import spearmanr

from _testset import load_test

from ddad.detector import Detector
from ddad.methods import METHODS
from ddad.pipeline import trial_copy
from ddad.selection import (ProxySet, auto_candidates, candidate_groups, candidates_from_grid, held_out_split,
                            objective, recombined_metrics)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--selection", help="a selection.json whose proxy objectives to show (default: the model's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--grid", nargs="+", action="append", metavar=("KEY", "VALUES"),
                    help="candidates from these axes instead of the method's auto grid (as `ddad select --grid`)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    base = Detector.load(a.model, a.device)
    cfg0 = base.cfg
    x, labels, masks = load_test(cfg0)
    labels, masks = torch.from_numpy(labels), masks[:, None].float()
    flag = torch.where(labels > 0, 0, -1)  # one "draw", one "source": the test set as a proxy set
    test = ProxySet(x, masks, labels, flag, flag)
    cal, _, _ = held_out_split(cfg0)

    method = METHODS[cfg0.method]
    candidates = candidates_from_grid(a.grid) if a.grid else auto_candidates(cfg0.method)
    cfgs, groups = candidate_groups(method, cfg0, candidates)
    rows = {}
    for members in groups.values():
        with trial_copy(a.model, cfgs[members[0]], a.device, calibration=cal) as det:
            cal_maps = det.calibration_terms
            maps = det.terms_maps(x)
            for c in members:
                rows[c] = recombined_metrics(det, cfgs[c], cal_maps, maps, test)[0]

    sel_path = Path(a.selection) if a.selection else Path(a.model) / "selection.json"
    sel = json.loads(sel_path.read_text()) if sel_path.exists() else None
    proxy = {c: r["extra"]["objective"] for c, r in sel["rows"].items()} if sel else {}
    print(f"{a.model}: {len(x)} test images ({int(labels.sum())} defective); proxy objectives from "
          f"{sel_path if sel else '(no selection.json)'}")
    print("| candidate | test I-AUROC | P-AUROC | PRO | test mean | proxy objective |")
    print("|---|---|---|---|---|---|")

    def mean3(m):
        return (m.image_auroc + m.pixel_auroc + m.pro) / 3

    best_test = max(candidates, key=lambda c: (rows[c].image_auroc, mean3(rows[c])))
    for c in candidates:
        m = rows[c]
        mark = (" <- chosen" if sel and c == sel["best"] else "") + (" <- test's best" if c == best_test else "")
        pr = f"{proxy[c]:.3f}" if c in proxy else "-"
        print(f"| {(c or '(as saved)') + mark} | {100 * m.image_auroc:.1f} | {100 * m.pixel_auroc:.1f} | "
              f"{100 * m.pro:.1f} | {mean3(m):.3f} | {pr} |")
    common = [c for c in candidates if c in proxy]
    if len(common) > 2:
        for name, test_of in (("image AUROC", objective), ("mean", mean3)):
            rho = spearmanr([proxy[c] for c in common], [test_of(rows[c]) for c in common]).statistic
            print(f"Spearman rho (proxy objective vs test {name}, {len(common)} candidates): {rho:.2f}")


if __name__ == "__main__":
    main()
