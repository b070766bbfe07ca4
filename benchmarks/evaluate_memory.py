"""Peak resident memory of `ddad evaluate` against the number of test images (issue: memory must not grow with the
dataset). Generates synthetic MVTec-layout test sets of 256-px images (a fifth nominal, the rest with defects and
masks), trains one small model on their nominal images once, then runs `ddad evaluate --out` (maps, masks, inputs
and reconstructions written as a report needs them) on each set in a fresh process and reads that process's peak
RSS from the kernel (os.wait4).

    python benchmarks/evaluate_memory.py                       # 500 and 5000 images, into /tmp/ddad_evalmem
    python benchmarks/evaluate_memory.py --sizes 200,2000 --work /tmp/x
    PYTHONPATH=/path/to/other/checkout/src python benchmarks/evaluate_memory.py --skip-train   # another version

The model is deliberately small (cpu-32 UNet at 128 px, 2 DDIM steps, 30 training steps): its scores mean
nothing; what is measured is the pipeline around it (loading, batching, metrics, the arrays saved for the report).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ddad.data.synthetic import CLEAR_DEFECTS as DEFECTS, SyntheticSpec, make_synthetic_dataset

CONFIG = """method: ddad
data: {{layout: mvtec, image_size: 128, val_fraction: 0.1}}
model: {{preset: cpu-32}}
train: {{steps: 30, batch_size: 8, checkpoint_every: 30}}
sampling: {{start_level: 250, steps: 2, batch_size: 16}}
features: {{backbone: efficientnet_lite0, layers: [1, 2]}}
adapt: {{epochs: 0}}
"""


def dataset(root: Path, n: int) -> Path:
    per_defect = (n - n // 5) // len(DEFECTS)
    good = n - per_defect * len(DEFECTS)
    category = root / "object"
    if not (category / "test").is_dir():
        return make_synthetic_dataset(root, SyntheticSpec(category="object", size=256, n_train=40, n_test_good=good,
                                                          n_test_per_defect=per_defect, seed=0))
    return category


def run(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of a child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    err = p.stderr.read().decode() if p.stderr else ""
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500,5000", help="test-set sizes, comma list")
    ap.add_argument("--work", default="/tmp/ddad_evalmem", help="folder for the data, model and results")
    ap.add_argument("--skip-train", action="store_true", help="reuse the model already in --work")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    ddad = [sys.executable, "-m", "ddad"]
    roots = {n: dataset(work / f"data{n}", n) for n in sizes}
    model = work / "model"
    if not args.skip_train:
        (work / "config.yaml").write_text(CONFIG.format())
        s, _ = run(ddad + ["train", "--config", str(work / "config.yaml"), "--data", str(roots[sizes[0]]),
                           "--out", str(model)])
        print(f"trained the small model in {s:.0f} s")
    rows = []
    for n in sizes:
        s, rss = run(ddad + ["evaluate", "--model", str(model), "--data", str(roots[n]), "--out",
                             str(work / f"eval{n}")])
        m = json.loads((work / f"eval{n}" / "metrics.json").read_text())
        rows.append((n, rss, s, m["n_images"]))
        print(f"{n} images: peak RSS {rss:.0f} MiB, {s:.0f} s", flush=True)
    print("\n| test images | peak RSS MiB | vs first | wall s |\n|---|---|---|---|")
    for n, rss, s, count in rows:
        assert count == n, f"evaluated {count} images, expected {n}"
        print(f"| {n} | {rss:.0f} | {rss / rows[0][1]:.2f}x | {s:.0f} |")


if __name__ == "__main__":
    main()
