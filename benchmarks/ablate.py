"""Ablations on a trained model (reads test labels: for analysis, never for defaults).

    python benchmarks/ablate.py runs/bottle-cpu/ddad ../shared/data/mvtec_bottle_256/bottle \
        sampling.w=0 scoring.v=2 sampling.start_level=150 adapt.epochs=0 adapt.epochs=4 features.input_size=null
Each argument is one variant (comma-separate several overrides: "sampling.w=0,scoring.v=2"); --no-baseline skips
the "(as trained)" row (when the benchmark already measured it). The UNet is never
retrained; each variant works on a copy of the model, re-adapts the feature extractor from its ImageNet weights
where features/adapt change, and re-calibrates on the held-out nominal images (`ddad.pipeline.trial_copy`).
"""
import argparse

from ddad.config import apply_overrides
from ddad.data import load_dataset
from ddad.detector import Detector
from ddad.metrics import format_table
from ddad.pipeline import trial_copy
from ddad.selection import split_candidate


def main(model_dir: str, data: str, variants: list[str], baseline: bool = True) -> None:
    base = apply_overrides(Detector.load(model_dir).cfg, [f"data.root={data}"])
    d = base.data
    test = load_dataset(d.layout, data, "test", d.category, d.shape, d.seed)
    rows = {}
    for v in ["(as trained)"] * baseline + variants:
        cfg = base if v == "(as trained)" else apply_overrides(base, split_candidate(v))
        with trial_copy(model_dir, cfg) as det:
            res = det.evaluate(test)
        rows[v] = res.metrics.with_extra(**{"s/img": res.seconds_per_image})
        print(format_table({v: rows[v]}, ("s/img",)).splitlines()[-1], flush=True)
    print(format_table(rows, ("s/img",)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="ablations on a trained model (reads test labels: analysis only)")
    ap.add_argument("model_dir")
    ap.add_argument("data")
    ap.add_argument("variants", nargs="*", help='overrides per variant, comma-separated: "sampling.w=0,scoring.v=2"')
    ap.add_argument("--no-baseline", action="store_true", help="skip the (as trained) row")
    a = ap.parse_intermixed_args()
    main(a.model_dir, a.data, a.variants, baseline=not a.no_baseline)
