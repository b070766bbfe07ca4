"""ddad select and benchmark: label-free choice of settings (docs/selection.md) and result tables (docs/data.md).
Each command's arguments sit above its handler."""
from __future__ import annotations

import argparse

from .common import add_common


def require_auto_grids(methods) -> None:
    """A method without a recipe fails before anything is trained, not after (baselines have none to need)."""
    from ..methods import METHODS
    from ..selection import auto_candidates

    for m in methods:
        if m in METHODS:
            auto_candidates(m)


def auto_select_and_print(model: str, device: str, seed: int, extra: list[str] = (),
                          proxy_source: str | None = None, data: str | None = None, apply: bool = True,
                          strengths: tuple[float, ...] | None = None, draws: int | None = None,
                          proxy_shape: str | None = None, proxy_foreground: str | None = None):
    """The label-free recipe (ddad.selection.auto_select), its table printed."""
    from ..selection import STRENGTHS, auto_select

    sel = auto_select(model, seed, device, extra, proxy_source, data, apply,
                      strengths=tuple(strengths or STRENGTHS),
                      draws=draws, proxy_shape=proxy_shape, proxy_foreground=proxy_foreground)
    print_selection(sel)
    if apply:
        print(f"saved into {model} (selection.json beside it)")
    return sel


def print_selection(sel) -> None:
    from ..selection import SATURATED

    faint = "" if sel.strength == 1 else (f" at {sel.strength:g} of full contrast (the model as saved found every "
                                          f"defect at {', '.join(f'{k:g}' for k, v in sel.probes.items() if v >= SATURATED)})")
    where = "on the part (unlike the image border)" if sel.foreground == "object" else "anywhere"
    per = (f"per defect source ({', '.join(sel.sources)}; {sel.shape} shapes {where})"
           + (f" and draw ({sel.draws} draws)" if sel.draws > 1 else ""))
    print(f"\nproxy set: {sel.n_proxy} held-out nominal images and, {per}, the same with synthetic defects{faint}; "
          f"calibrated on {sel.n_calibration}"
          f"{' (the same images: too few to split)' if sel.shared else ''}\n")
    print(sel.table())
    print(f"\nbest: {sel.best or '(as saved)'}")
    for line in sel.warning().splitlines():
        print(f"WARNING: {line}")


def args_select(s: argparse.ArgumentParser) -> None:
    s.add_argument("--model", required=True, help="model directory from `ddad train`")
    s.add_argument("--grid", nargs="+", action="append", default=[], metavar=("KEY", "VALUE"),
                   help="one axis of candidates, e.g. --grid glad.t_min 100 200 350 (repeat: their product)")
    s.add_argument("--try", dest="tries", action="append", default=[], metavar="K=V[,K=V]",
                   help="one more candidate, e.g. --try sampling.start_level=500,glad.t_min=150")
    s.add_argument("--data", help="dataset folder of the nominal images (default: the model's data.root)")
    s.add_argument("--seed", type=int, default=0, help="seed of the synthetic defects")
    s.add_argument("--proxy-source", help="defect contents, comma list: grid, patch, texture or a folder")
    s.add_argument("--proxy-shape", choices=("perlin", "cutpaste"), help="defect shapes (default: the method's)")
    s.add_argument("--proxy-strength", nargs="+", type=float, metavar="S",
                   help="defect contrasts tried while every defect is found (default: 1 0.5 0.25)")
    s.add_argument("--proxy-draws", type=int, metavar="K", help="draws of synthetic defects (default: 3)")
    s.add_argument("--proxy-foreground", choices=("object", "none"),
                   help="defects only where the image is unlike its border (default: object), or anywhere")
    s.add_argument("--auto", action="store_true", help="the label-free recipe: the method's own grid and proxy")
    s.add_argument("--apply", action="store_true", help="save the best into the model, with selection.json")
    s.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def cmd_select(args: argparse.Namespace) -> int:
    from ..selection import STRENGTHS, apply_selection, candidates_from_grid, select_settings

    candidates = candidates_from_grid(args.grid, args.tries)
    if args.auto:
        auto_select_and_print(args.model, args.device, args.seed, candidates[1:], args.proxy_source,
                     args.data, args.apply, args.proxy_strength, args.proxy_draws, args.proxy_shape,
                     args.proxy_foreground)
        return 0
    if len(candidates) == 1:
        raise ValueError("nothing to choose from: give --grid KEY V1 V2 ... and/or --try K=V[,K=V], or --auto")
    sel = select_settings(args.model, candidates, args.data, args.seed, args.device, proxy_source=args.proxy_source,
                          strengths=tuple(args.proxy_strength or STRENGTHS),
                          draws=args.proxy_draws, proxy_shape=args.proxy_shape,
                          proxy_foreground=args.proxy_foreground)
    print_selection(sel)
    if args.apply:
        apply_selection(args.model, sel, args.device)
        print(f"saved into {args.model} (selection.json beside it)")
    elif sel.best:
        print(f"apply it with --apply, or: ddad select ... --apply; the overrides: {sel.best}")
    return 0


def args_benchmark(s: argparse.ArgumentParser) -> None:
    add_common(s, config=False)
    s.add_argument("--config", action="append", help="YAML config of one method; repeat, one per method")
    s.add_argument("--data", help="dataset folder (or env DDAD_BENCH_DATA)")
    s.add_argument("--layout", help="dataset layout (default: the config's)")
    s.add_argument("--category", help="category inside the dataset folder")
    s.add_argument("--methods", default="ddad,patchcore",
                   help="comma list of methods (ddad, d3ad, glad, ran) and baselines (patchcore)")
    s.add_argument("--steps", "--ddad-steps", dest="ddad_steps", default=None,
                   help="denoising-step variants, comma list (default: each config's sampling.steps)")
    s.add_argument("--out", default="runs/benchmark")
    s.add_argument("--reuse", action="store_true", help="reuse trained models in --out")
    s.add_argument("--auto", action="store_true", help="choose each method's settings without labels first")


def cmd_benchmark(args: argparse.Namespace) -> int:
    import os
    from dataclasses import replace

    from ..benchmark import run_benchmark
    from ..config import METHOD_NAMES, load_config

    root = args.data or os.environ.get("DDAD_BENCH_DATA")
    configs = []
    for path in args.config or [None]:
        method = load_config(path).method
        # an override of a method's own section (d3ad.k=5) goes to that method's config only
        mine = [o for o in args.set or [] if o.split(".", 1)[0] not in METHOD_NAMES or o.split(".", 1)[0] == method]
        cfg = load_config(path, mine)
        cfg = replace(cfg, data=replace(cfg.data, root=root or cfg.data.root, layout=args.layout or cfg.data.layout,
                                        category=args.category or cfg.data.category))
        if not cfg.data.root:
            raise ValueError("no dataset: pass --data PATH or set DDAD_BENCH_DATA")
        configs.append(cfg)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    steps = tuple(int(n) for n in args.ddad_steps.split(",")) if args.ddad_steps else None
    if args.auto:
        require_auto_grids(methods)
    print(run_benchmark(configs, methods, args.out, reuse=args.reuse, ddad_steps=steps, device=args.device,
                        auto=args.auto))
    print(f"tables in {args.out}/benchmark.md and benchmark.json")
    return 0


COMMANDS = {
    "select": ("choose inference settings without labels (docs/selection.md)", args_select, cmd_select, {}),
    "benchmark": ("train/evaluate methods and baselines on one category, one table", args_benchmark, cmd_benchmark,
                  {}),
}
