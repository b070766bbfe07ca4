"""Milliseconds per image of the pieces a prediction is made of, untrained networks (cost does not depend on the
weights): UNet presets on their inputs, the D3AD autoencoder, the Lite0 feature extractor at 128/256 px with and
without slicing the batch. Explains where DDAD-10 and D3AD-10 spend their time.
    python benchmarks/components.py --config configs/mvtec/bottle-d3ad-cpu.yaml
"""
import argparse
import time

import torch

from ddad.config import load_config
from ddad.diffusion import build_unet
from ddad.diffusion.autoencoder import build_autoencoder, decode, encode
from ddad.features import extractor as fx


def per_image_ms(f, batch: int, rounds: int) -> float:
    f()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] / batch * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mvtec/bottle-d3ad-cpu.yaml", help="D3AD config (autoencoder, size)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    cfg = load_config(args.config)
    size, b, r = cfg.data.image_size, args.batch, args.rounds
    x = torch.rand(b, 3, size, size)
    t = torch.full((b,), 100)
    rows = []
    with torch.inference_mode():
        for preset, res, ch in (("cpu-128", size, 3), ("latent-32", size // 4, 4), ("latent-32s", size // 4, 4)):
            u = build_unet(preset, res, ch).eval()
            inp = torch.randn(b, ch, res, res)
            rows.append((f"UNet {preset} call on {ch}x{res}x{res}", per_image_ms(lambda: u(inp, t), b, r)))
        vae = build_autoencoder(cfg.d3ad.autoencoder).eval()
        z = torch.randn(b, 4, size // 4, size // 4)
        rows.append(("autoencoder encode (slices of 4)", per_image_ms(lambda: encode(vae, x * 2 - 1, 1.0), b, r)))
        rows.append(("autoencoder decode (slices of 4)", per_image_ms(lambda: decode(vae, z, 1.0), b, r)))
        for px in (size, 256):
            ext = fx.build_extractor("efficientnet_lite0", None, px)
            rows.append((f"Lite0 layers 2,3 at {px} px (slices of {fx.INFERENCE_CHUNK})",
                         per_image_ms(lambda: ext(x, (2, 3)), b, r)))
            chunk, fx.INFERENCE_CHUNK = fx.INFERENCE_CHUNK, b
            rows.append((f"Lite0 layers 2,3 at {px} px (whole batch of {b})", per_image_ms(lambda: ext(x, (2, 3)), b, r)))
            fx.INFERENCE_CHUNK = chunk
    print(f"batch {b}, {torch.get_num_threads()} threads, image {size} px, median of {r}")
    for name, ms in rows:
        print(f"  {name:48s} {ms:7.1f} ms/img")


if __name__ == "__main__":
    main()
