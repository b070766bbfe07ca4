"""`ddad predict` on a folder: images per second scored in batches of sampling.batch_size against one at a time,
with the same pictures and predictions.json written (run_predict, the function behind the command), and the scores
of the two compared.

    python benchmarks/predict_batch.py runs/bottle-600 ../shared/data/mvtec_bottle_256/bottle/test --batches 1,16 \\
        [--backend openvino --precision bf16]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

from ddad.detector import Detector
from ddad.pipeline import input_files, run_predict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("folder")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--backend", default="torch")
    p.add_argument("--precision", default="fp32")
    args = p.parse_args()
    det = Detector.load(args.model, backend=args.backend, precision=args.precision)
    n = len(input_files([args.folder]))
    rows, ref = [], None
    for bs in (int(b) for b in args.batches.split(",")):
        det.cfg = replace(det.cfg, sampling=replace(det.cfg.sampling, batch_size=bs))
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            records = run_predict(det, [args.folder], out)
            s = time.perf_counter() - t0
        scores = [r.score for r in records]
        ref = ref or scores
        rows.append((bs, n / s, s, max(abs(a - b) for a, b in zip(scores, ref))))
    print(f"{n} images, {args.model}, backend {args.backend} {args.precision}, pictures and predictions.json written\n")
    print("| batch | img/s | wall s | max score diff to the first row |")
    print("|---|---|---|---|")
    for bs, ips, s, d in rows:
        print(f"| {bs} | {ips:.2f} | {s:.1f} | {d:.1e} |")


if __name__ == "__main__":
    main()
