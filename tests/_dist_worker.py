"""What each process of the 2-process training tests runs (spawned; module level so it can be pickled)."""
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist


def setup(steps: int, checkpoint_every: int):
    from ddad.config import TrainConfig
    from ddad.diffusion import NoiseSchedule, build_unet

    torch.manual_seed(0)
    model = build_unet("cpu-32", 16)
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-3, optimizer="adamw", weight_decay=0.0, ema_decay=0.9,
                      checkpoint_every=checkpoint_every, seed=0)
    return model, images, cfg, NoiseSchedule.linear(1000)


def train(rank: int, world: int, init_file: str, out: str, steps: int, resume: bool, checkpoint_every: int) -> None:
    from safetensors.torch import save_file

    from ddad.diffusion import train as tr

    torch.set_num_threads(1)
    out_dir = Path(out)
    if world > 1:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    save = tr._save

    def counted(*a, **k):  # which ranks write checkpoints
        with open(out_dir / "saves.log", "a") as f:
            f.write(f"{rank}\n")
        return save(*a, **k)

    tr._save = counted
    model, images, cfg, sched = setup(steps, checkpoint_every)
    result, ema = tr.train_model(model, images, tr.eps_loss(sched), cfg, out_dir / "ckpt", resume=resume)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out_dir / f"rank{rank}.safetensors")
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"loss": result.final_loss, "start": result.start_step,
                                                           "steps": result.steps}))
    if world > 1:
        dist.destroy_process_group()
