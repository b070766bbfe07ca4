"""Training step time with the nominal images stacked in one tensor vs read on demand (ddad.data.ImageSet).

    python benchmarks/train_input.py --config configs/mvtec/bottle-cpu.yaml --data ../shared/data/mvtec_bottle_256/bottle --steps 20

Both runs draw the same batches (the test suite checks equal weights); this measures what reading and decoding each
batch on demand costs per step, and the peak RSS of each run in its own process.
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def one(config: str, data: str, steps: int, stacked: bool) -> dict:
    from ddad.config import load_config
    from ddad.detector import Detector
    from ddad.pipeline import nominal_split

    cfg = load_config(config, [f"data.root={data}", f"train.steps={steps}", f"train.checkpoint_every={steps}"])
    train, _ = nominal_split(cfg)
    images = train.stack() if stacked else train
    det = Detector.create(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        r = det.fit(images, tmp)
        seconds = time.perf_counter() - t0
    return {"input": "stacked tensor" if stacked else "ImageSet", "s/step": seconds / steps, "loss": r.final_loss,
            "peak MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--one", choices=["stacked", "imageset"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.config, a.data, a.steps, a.one == "stacked")))
        sys.exit(0)
    print("| input | s/step | final loss | peak MiB |\n|---|---|---|---|")
    for kind in ("stacked", "imageset"):  # one process each: peak RSS is per run
        out = subprocess.run([sys.executable, __file__, "--config", a.config, "--data", a.data, "--steps", str(a.steps),
                              "--one", kind], check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {r['input']} | {r['s/step']:.3f} | {r['loss']:.4f} | {r['peak MiB']:.0f} |", flush=True)
