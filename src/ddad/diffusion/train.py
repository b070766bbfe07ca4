"""Training the eps-prediction UNet on nominal images (DDPM objective), resumable from safetensors checkpoints.

Every step draws its batch, timesteps and noise from a generator seeded by (seed, step), so a run resumed
from step k continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..checkpoint import load_json, load_tensors, save_json, save_tensors
from ..config import TrainConfig
from ..data import ImageSet
from .schedule import NoiseSchedule

__all__ = ["TrainResult", "LossFn", "eps_loss", "train_model", "train_diffusion", "data_fingerprint", "CHECKPOINT_NAME",
           "ema_update"]

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "last"


@dataclass(frozen=True)
class TrainResult:
    start_step: int
    steps: int  # total optimiser steps done (including resumed ones)
    final_loss: float
    seconds: float
    images_per_second: float


def data_fingerprint(images: torch.Tensor | ImageSet, chunk: int = 64) -> str:
    """Short content hash of the training images (stored with checkpoints; resume checks it). Read in chunks, so an
    ImageSet is hashed without holding it whole; a tensor and an ImageSet of the same pixels hash alike."""
    h = hashlib.sha256()
    n = images.shape[0]
    for s in range(0, n, chunk):
        q = (images[s : s + chunk].float().clamp(-1, 1) * 127.5).round().to(torch.int8).cpu().numpy()
        h.update(q.tobytes())
    h.update(str(tuple(images.shape)).encode())
    return h.hexdigest()[:16]


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adam or adamw")


@torch.no_grad()
def ema_update(pairs: list[tuple[torch.Tensor, torch.Tensor]], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * weight for each (float32 ema, weight) pair; integer buffers are copied.
    One multi-tensor lerp over the weights of the EMA's dtype (a few kernel launches on a GPU instead of one per
    tensor; the same lerp, element for element, on a CPU), the others (bf16 weights, buffers) one by one."""
    same = [(e, v) for e, v in pairs if v.dtype == e.dtype]
    if same:
        torch._foreach_lerp_([e for e, _ in same], [v for _, v in same], 1 - decay)
    for e, v in pairs:
        if v.dtype != e.dtype:
            e.lerp_(v.float(), 1 - decay) if v.is_floating_point() else e.copy_(v)


def _save(ckpt: Path, model, ema, opt, step: int, loss: float, fingerprint: str, meta: dict) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.items()})
    state = opt.state_dict()
    for i, s in state["state"].items():
        tensors.update({f"opt.{i}.{k}": torch.as_tensor(v) for k, v in s.items()})
    save_tensors(tensors, ckpt.with_suffix(".safetensors"))
    save_json({"step": step, "loss": loss, "fingerprint": fingerprint, "param_groups": state["param_groups"],
               **meta}, ckpt.with_suffix(".json"))


def _load(ckpt: Path, model, opt, fingerprint: str) -> tuple[int, dict[str, torch.Tensor] | None]:
    info = load_json(ckpt.with_suffix(".json"))
    if info.get("fingerprint") != fingerprint:
        raise ValueError(
            f"checkpoint {ckpt} was trained on other data (fingerprint {info.get('fingerprint')} vs {fingerprint}); "
            "use a new run directory or drop --resume"
        )
    tensors = load_tensors(ckpt.with_suffix(".safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")} or None
    opt_state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": info["param_groups"]})
    return int(info["step"]), ema


# A method's training objective: (model, clean GLOBAL batch x0 (B, C, H, W), CPU generator, generator on the
# model's device, this process's part of the batch) -> scalar loss over that part. Everything random is drawn from
# the two generators (seeded by (seed, step)) for the whole global batch, then cut to `part`: N data-parallel
# processes (ddad.distributed) see exactly the samples, timesteps and noise one process would.
LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Generator, torch.Generator, slice], torch.Tensor]


def eps_loss(schedule: NoiseSchedule) -> LossFn:
    """DDPM's L_simple: ||eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, t)||^2, t ~ U{0..T-1}."""

    def loss(model: torch.nn.Module, x0: torch.Tensor, g: torch.Generator, gd: torch.Generator,
             part: slice = slice(None)) -> torch.Tensor:
        t = torch.randint(schedule.num_train_timesteps, (x0.shape[0],), generator=g).to(x0.device)
        noise = torch.randn(x0.shape, generator=gd, device=x0.device)
        x0, t, noise = x0[part], t[part], noise[part]
        pred = model(schedule.q_sample(x0, t, noise), t).sample
        return F.mse_loss(pred.float(), noise)

    return loss


class _Objective(torch.nn.Module):
    """model + objective as one module: what DistributedDataParallel wraps, so gradients are averaged across
    processes whatever the objective calls (a UNet's forward, an autoencoder's encode/decode)."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, x0: torch.Tensor, g: torch.Generator, gd: torch.Generator, part: slice) -> torch.Tensor:
        return self.loss_fn(self.model, x0, g, gd, part)


def _step_generator(cfg: TrainConfig, step: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Everything random in a step (its batch first, then timesteps and noise) comes from this generator (seeded
    alike on the model's device for the noise drawn there)."""
    return torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + step)


def _batch_indices(cfg: TrainConfig, step: int, n: int) -> list[int]:
    """The images of a step's batch: the first draw of the step's generator (as train_model's loop draws it)."""
    return torch.randint(n, (cfg.batch_size,), generator=_step_generator(cfg, step)).tolist()


def train_diffusion(model: torch.nn.Module, schedule: NoiseSchedule, images: torch.Tensor | ImageSet, cfg: TrainConfig,
                    ckpt_dir: str | Path, resume: bool = False, meta: dict | None = None,
                    progress: bool = False) -> tuple[TrainResult, dict[str, torch.Tensor] | None]:
    """Train `model` (eps prediction) on nominal images (N, C, H, W) in [-1, 1]; returns (result, ema weights)."""
    return train_model(model, images, eps_loss(schedule), cfg, ckpt_dir, resume, meta, progress)


def train_model(
    model: torch.nn.Module,
    images: torch.Tensor | ImageSet,
    loss_fn: LossFn,
    cfg: TrainConfig,
    ckpt_dir: str | Path,
    resume: bool = False,
    meta: dict | None = None,
    progress: bool = False,
    desc: str = "train",
) -> tuple[TrainResult, dict[str, torch.Tensor] | None]:
    """Train `model` on images (N, C, H, W) with `loss_fn`, resumable from ckpt_dir; returns (result, EMA weights).
    images: a tensor (kept on the model's device: small nominal sets) or an ImageSet (each step's batch read on
    demand, decoded ahead by its workers: memory does not grow with the dataset); the same batches either way.

    A run whose checkpoint already has cfg.steps steps returns at once (a finished stage of a resumed run)."""
    if images.shape[0] == 0:
        raise ValueError("no training images: the nominal training set is empty")
    device = next(model.parameters()).device
    ckpt = Path(ckpt_dir) / CHECKPOINT_NAME
    fingerprint = data_fingerprint(images)
    opt = _optimizer(model, cfg)
    step, ema = 0, None
    if resume and ckpt.with_suffix(".json").is_file():
        step, ema = _load(ckpt, model, opt, fingerprint)
        log.info("resumed from %s at step %d", ckpt, step)
    if ema is not None:
        ema = {k: v.to(device) for k, v in ema.items()}
    if cfg.ema_decay > 0 and ema is None:
        ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    amp = cfg.mixed_precision and device.type == "cuda"
    if isinstance(images, torch.Tensor):
        images = images.to(device)  # a tensor holds a small nominal set: keep it where the model is
        batches = None
    else:  # an ImageSet: the batches the (seed, step) generators choose, read ahead of the loop
        batches = images.draws((_batch_indices(cfg, k, images.shape[0]) for k in range(step, cfg.steps)), device)
    ema_pairs = None if ema is None else [(ema[k], v) for k, v in model.state_dict().items()]
    w = distributed.world()
    part = distributed.shard(cfg.batch_size, w)
    objective: torch.nn.Module = _Objective(model, loss_fn)
    if w.size > 1:  # gradients averaged over the processes; parameters start equal (seeded) and are broadcast
        from torch.nn.parallel import DistributedDataParallel

        objective = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()
    start_step, t0, loss_val = step, time.perf_counter(), float("nan")
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, unit="step", disable=not (progress and w.main),
               dynamic_ncols=True)
    while step < cfg.steps:
        # 1. batch and all noise from a (seed, step) generator: exact resume
        #    (noise drawn on the model's device: the same (seed, step) gives the same batch there, on CPU as before)
        g = _step_generator(cfg, step)
        idx = torch.randint(images.shape[0], (cfg.batch_size,), generator=g)
        gd = g if device.type == "cpu" else _step_generator(cfg, step, device)
        x0 = images[idx.to(device)] if batches is None else next(batches).to(device, non_blocking=True)
        # 2. the method's objective
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = objective(x0, g, gd, part)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        # 3. EMA, progress, checkpoints
        if ema_pairs is not None:
            ema_update(ema_pairs, cfg.ema_decay)
        bar.update(1)
        last = step % cfg.checkpoint_every == 0 or step == cfg.steps
        if step % 25 == 0 or last:  # reading the loss waits for the GPU: not every step
            loss_val = float(distributed.mean_across(loss.detach()))  # the global batch's loss on every rank
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss_val:.4f}", img_s=f"{(step - start_step) * cfg.batch_size / elapsed:.1f}")
        if last:
            if w.main:  # one writer; the others wait so no rank runs ahead of a checkpoint
                _save(ckpt, model, ema, opt, step, loss_val, fingerprint, meta or {})
            distributed.barrier()
    bar.close()
    model.eval()
    seconds = time.perf_counter() - t0
    done = step - start_step
    return TrainResult(start_step, step, loss_val, seconds, done * cfg.batch_size / max(seconds, 1e-9)), ema
