"""Ablations of inference-time settings on a trained model (reads test labels: for analysis, never for defaults).

    python benchmarks/ablate.py runs/bottle-cpu/ddad ../shared/data/mvtec_bottle_256/bottle \
        sampling.w=0 sampling.w=8 scoring.v=2 sampling.start_level=150 sampling.steps=5
Each argument is one variant (comma-separate several overrides: "sampling.w=0,scoring.v=2").
"""
import sys

from ddad.config import apply_overrides
from ddad.data import load_dataset
from ddad.detector import Detector
from ddad.metrics import format_table
from ddad.pipeline import nominal_split


def main(model_dir: str, data: str, variants: list[str]) -> None:
    det = Detector.load(model_dir)
    base = det.cfg
    d = base.data
    test = load_dataset(d.layout, data, "test", d.category, d.image_size, d.seed)
    rows = {}
    for v in ["(as trained)", *variants]:
        det.cfg = base if v == "(as trained)" else apply_overrides(base, v.split(","))
        _, val = nominal_split(apply_overrides(det.cfg, [f"data.root={data}"]))
        det.calibrate(val)  # the v-balance scale depends on the setting; nominal images only
        res = det.evaluate(test)
        rows[v] = res.metrics.with_extra(**{"s/img": res.seconds_per_image})
        print(format_table({v: rows[v]}, ("s/img",)).splitlines()[-1], flush=True)
    print(format_table(rows, ("s/img",)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
