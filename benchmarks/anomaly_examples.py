"""A picture of the synthetic-anomaly generator (GLAD's ATP training data, the proxy validation set): nominal image,
the same image with its defect, the mask, the mask's outline.

    python benchmarks/anomaly_examples.py docs/synthetic_anomalies.png                 # ddad's synthetic categories
    python benchmarks/anomaly_examples.py out.png --data path/to/category [--set glad.anomalies.foreground=object]

With --data the training images of that folder (MVTec layout) are used; the anomaly options come from a config's
glad.anomalies section (defaults: GLAD's). Every sample is drawn with an anomaly (force), seeded.
"""
import argparse
import tempfile

import torch

from ddad.config import load_config
from ddad.data import load_dataset
from ddad.data.anomalies import synthesize_batch
from ddad.data.synthetic import SyntheticSpec, make_synthetic_dataset
from ddad.methods.glad import anomaly_spec
from ddad.pipeline import stack_images
from ddad.report import anomaly_sheet, save_png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--data", help="a category folder (MVTec layout); default: ddad's synthetic object/texture/surface")
    ap.add_argument("--config", help="config whose glad.anomalies section to use")
    ap.add_argument("--set", action="append", default=[], help="override, e.g. glad.anomalies.foreground=object")
    ap.add_argument("--n", type=int, default=4, help="samples per category")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    spec = anomaly_spec(load_config(args.config, ["method=glad", *args.set]))
    if args.data:
        images = stack_images(load_dataset("mvtec", args.data, "train", image_size=args.size))[: args.n]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            images = torch.cat([stack_images(load_dataset("mvtec", make_synthetic_dataset(
                tmp, SyntheticSpec(category=c, size=args.size, n_train=args.n, n_test_good=0, n_test_per_defect=0,
                                   seed=args.seed)), "train", image_size=args.size)) for c in ("object", "texture", "surface")])
    anomalous, masks, _ = synthesize_batch(images, args.seed, spec, force=True)
    print(save_png(anomaly_sheet(images, anomalous, masks), args.out))


if __name__ == "__main__":
    main()
