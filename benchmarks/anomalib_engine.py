"""A ddad method trained and tested through anomalib's Engine on an MVTec-layout category; the same model evaluated by
`ddad evaluate` on the same test split; anomalib's own Patchcore (ddad's offline backbone) from the same Engine.

    python benchmarks/anomalib_engine.py --data ../shared/data/mvtec_bottle_256 --category bottle \
        --config configs/mvtec/bottle-cpu.yaml --out runs/anomalib-bottle --auto

Prints one table: anomalib's test metrics of the ddad model, ddad's metrics of the same model directory, their
difference, and Patchcore's anomalib metrics. `train s` is Engine.fit's wall time (training, adaptation, calibration
and, with --auto, the selection); `s/img` is engine.test's wall time over the test images (loading, pre- and
post-processing and metrics included) and, for ddad evaluate, the model's time per image.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def anomalib_row(metrics: dict, seconds: float, n: int, train_s: float) -> dict:
    return {"I-AUROC": metrics["image_AUROC"], "P-AUROC": metrics["pixel_AUROC"], "PRO": metrics["pixel_AUPRO"],
            "s/img": seconds / n, "train s": train_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset root holding the category folder (MVTec layout)")
    p.add_argument("--category", required=True)
    p.add_argument("--config", required=True, help="ddad config of the method")
    p.add_argument("--method", default="ddad")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True)
    p.add_argument("--auto", action="store_true", help="the method's label-free selection after training")
    p.add_argument("--resume", action="store_true", help="continue the method's training from --out's checkpoints")
    p.add_argument("--reuse", action="store_true",
                   help="test the model an earlier run trained through the Engine in --out (no training)")
    p.add_argument("--patchcore-size", type=int, default=256, help="Patchcore's input size (its maps and masks too)")
    p.add_argument("--no-patchcore", action="store_true")
    args = p.parse_args()

    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    import ddad.anomalib as da
    from ddad.data import load_dataset
    from ddad.detector import Detector
    from ddad.pipeline import run_evaluate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_cls = getattr(da, da.METHODS[args.method].__name__)
    dm = MVTecAD(root=args.data, category=args.category, train_batch_size=16, eval_batch_size=16, num_workers=0)
    engine = Engine(default_root_dir=str(out / "engine"), accelerator="cpu", logger=False)
    if args.reuse:
        model, train_s = model_cls(model_dir=str(out / args.method)), float("nan")
        dm.setup()
    else:
        model = model_cls(config=args.config, overrides=args.overrides, run_dir=str(out / args.method),
                          auto=args.auto, resume=args.resume)
        t0 = time.perf_counter()
        engine.fit(model=model, datamodule=dm)
        train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    [metrics] = engine.test(model=model, datamodule=dm)
    test_s = time.perf_counter() - t0
    n_test = len(dm.test_data)
    rows = {f"{args.method} through anomalib's Engine (anomalib's metrics)": anomalib_row(metrics, test_s, n_test,
                                                                                          train_s)}

    det = Detector.load(out / args.method)
    ds = load_dataset("mvtec", Path(args.data) / args.category, "test", image_size=det.cfg.data.shape)
    res = run_evaluate(det, ds, out / args.method / "eval", name=args.method, progress=False)
    m = res.metrics
    rows["the same model directory, `ddad evaluate`"] = {
        "I-AUROC": m.image_auroc, "P-AUROC": m.pixel_auroc, "PRO": m.pro, "s/img": res.seconds_per_image,
        "train s": float("nan")}
    a, b = list(rows.values())
    rows["difference (anomalib - ddad)"] = {k: a[k] - b[k] for k in ("I-AUROC", "P-AUROC", "PRO")}

    if not args.no_patchcore:
        pc = da.offline_patchcore(args.patchcore_size)
        engine_pc = Engine(default_root_dir=str(out / "engine_patchcore"), accelerator="cpu", logger=False)
        t0 = time.perf_counter()
        engine_pc.fit(model=pc, datamodule=dm)
        pc_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        [pm] = engine_pc.test(model=pc, datamodule=dm)
        rows[f"anomalib's Patchcore, same Engine settings ({args.patchcore_size} px)"] = anomalib_row(
            pm, time.perf_counter() - t0, n_test, pc_train)

    cols = ("I-AUROC", "P-AUROC", "PRO", "s/img", "train s")
    print(f"\n{args.category}: {n_test} test images; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("|  | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, r in rows.items():
        cells = []
        for c in cols:
            v = r.get(c)
            if v is None or v != v:
                cells.append("")
            elif c in ("I-AUROC", "P-AUROC", "PRO"):
                cells.append(f"{100 * v:+.2f}" if name.startswith("difference") else f"{100 * v:.1f}")
            else:
                cells.append(f"{v:.3g}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    (out / "rows.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
