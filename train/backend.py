"""What depends on the launch backend (plain / DDP / DeepSpeed): the Accelerator and the optimizer update.

accelerate owns devices, DDP, DeepSpeed and autocast; the trainer calls these and nothing lower.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gte_model.core.config import ConfigError
from gte_model.core.errors import import_extra
from train.config import TrainConfig, launched_with_deepspeed
from train.distributed import all_reduce_mean, group_backend, world


def make_accelerator(cfg: TrainConfig):
    """The Accelerator, with the launch-dependent rules re-checked against what it actually got."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # One process may fit several stages (gte run); accelerate keeps the first one's precision in a process-wide
    # singleton and refuses another. The process group (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    from accelerate.utils import InitProcessGroupKwargs

    deepspeed, cpu = launched_with_deepspeed(), not torch.cuda.is_available()
    if deepspeed:  # else accelerate raises an ImportError traceback
        import_extra("deepspeed", "ACCELERATE_USE_DEEPSPEED=true (a DeepSpeed accelerate config)", "deepspeed",
                     "launch with configs/accelerate/ddp.yaml")
    # cpu=True without CUDA: under `accelerate launch --multi_gpu` the processes then form a gloo group (without it
    # each would train alone, believing itself rank 0 of 1). DeepSpeed sets up its own group (cpu=True would drop
    # it); on the CPU accelerate knows no backend for it and would report 1 process of a DeepSpeed group of N (every
    # rank "main", the micro batch N times too big), so gloo is named.
    handlers = [InitProcessGroupKwargs(backend="gloo")] if deepspeed and cpu else []
    acc = Accelerator(mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[cfg.train.precision],
                      cpu=cpu and not deepspeed, kwargs_handlers=handlers)
    size = launched_world_size(acc)
    stage = acc.state.deepspeed_plugin.zero_stage if is_deepspeed(acc) else 0
    errors = cfg.validate(world_size=size, zero_stage=stage)
    if errors:
        raise ConfigError("invalid config for this launch:\n  " + "\n  ".join(errors))
    if is_deepspeed(acc):  # no dataloader goes through prepare(), so DeepSpeed's batch fields are filled here
        ds = acc.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = cfg.train.global_batch_size // size
        ds["train_batch_size"] = cfg.train.global_batch_size
        ds["gradient_accumulation_steps"] = 1
        ds["gradient_clipping"] = cfg.optim.max_grad_norm
    if acc.is_main_process:
        print(launch_line(acc, size, cfg.train.global_batch_size), flush=True)
        for line in fewer_processes_than_asked(size):
            print(line, file=sys.stderr, flush=True)
    return acc


def launch_line(acc, size: int, global_batch_size: int) -> str:
    """What this launch really got, first thing in every training log: a wrong process count shows at once."""
    if is_deepspeed(acc):
        backend = f"DeepSpeed ZeRO-{acc.state.deepspeed_plugin.zero_stage}"
    else:
        backend = "DDP" if size > 1 else "single process"
    group = f" over {group_backend()}" if size > 1 else ""
    return (f"gte train: world_size={size} ({backend}{group} on {acc.device.type}), "
            f"{global_batch_size // size} pairs per process of train.global_batch_size={global_batch_size}")


def fewer_processes_than_asked(size: int) -> list[str]:
    """Warnings for a launch that asked for several processes and got fewer: `accelerate launch --cpu
    --num_processes N` runs ONE process (its simple launcher only sets MASTER_PORT, expecting mpirun), and a
    plain command on a machine with several GPUs uses one of them."""
    lines = []
    if size == 1 and "MASTER_PORT" in os.environ and "WORLD_SIZE" not in os.environ:
        lines.append("gte train: warning: the launcher asked for several processes but started 1 (accelerate launch "
                     "--cpu starts one); for N CPU processes use `accelerate launch --multi_gpu --num_processes N` "
                     "or `NUM_GPUS=N CPU=1 scripts/launch_multi_gpu.sh`")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > size and "LOCAL_WORLD_SIZE" not in os.environ:
        lines.append(f"gte train: warning: {gpus} GPUs are visible and this run uses {size}; use all with "
                     f"scripts/launch_multi_gpu.sh (or set CUDA_VISIBLE_DEVICES to the ones you mean)")
    return lines


def name_deepspeed_accelerator() -> None:
    """On a machine without any accelerator tell DeepSpeed so (DS_ACCELERATOR=cpu) before anything imports it:
    accelerate imports DeepSpeed whenever it is installed, and DeepSpeed's own probe then warns "Setting accelerator
    to CPU" on every command. Where torch sees a GPU (or another device) DeepSpeed's probe is left to choose."""
    if torch.accelerator.current_accelerator() is None:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def launched_world_size(acc) -> int:
    """The process count the collectives really span: DeepSpeed's own under DeepSpeed (what its batch check uses),
    else accelerate's; an accelerate state that disagrees is a launch bug, stopped here before any step."""
    size = acc.num_processes
    if is_deepspeed(acc):
        from deepspeed import comm

        size = comm.get_world_size()
    if size != acc.num_processes or size != world()[1]:
        raise RuntimeError(f"launch: DeepSpeed sees {size} processes, accelerate {acc.num_processes}, "
                           f"torch.distributed {world()[1]}: they must agree")
    return size


def is_deepspeed(acc) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.DEEPSPEED


@dataclass
class Updater:
    """backward(loss) for the step functions, no_sync() for all cached chunks but the last, and update(loss, lr):
    clip, check that loss and gradient norm are finite on every process, then step (or skip) and zero the grads.
    Returns (grad norm, applied)."""

    backward: Callable[[torch.Tensor], None]
    no_sync: Callable[[], contextlib.AbstractContextManager]
    update: Callable[[torch.Tensor, float], tuple[float | None, bool]]


def make_updater(acc, model, optimizer, max_grad_norm: float) -> Updater:
    if is_deepspeed(acc):
        return _deepspeed_updater(model)

    def update(loss: torch.Tensor, lr: float) -> tuple[float | None, bool]:
        params = [p for p in model.parameters() if p.grad is not None]
        if max_grad_norm > 0:
            norm = acc.clip_grad_norm_(model.parameters(), max_grad_norm)
        else:  # clipping off: the norm is still measured, for the finiteness check and the log
            norm = torch.nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())
        applied = _all_finite(loss, norm, acc.device)
        if applied:
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(norm), applied

    return Updater(acc.backward, lambda: acc.no_sync(model), update)


def _deepspeed_updater(engine) -> Updater:
    """accelerator.backward also steps the optimizer under DeepSpeed, which the cached step's per-chunk backward must
    not do: the engine's own backward is used, and no_sync marks chunks but the last as gradient-accumulation
    micro-steps (the engine's no_sync() drops their gradients under ZeRO-1: measured). The engine steps once,
    clipping by the gradient_clipping set in make_accelerator. A non-finite step cannot be skipped inside the
    engine, so the trainer stops at the first one (train.max_bad_steps does not apply)."""

    @contextlib.contextmanager
    def no_sync():
        engine.set_gradient_accumulation_boundary(False)
        try:
            yield
        finally:
            engine.set_gradient_accumulation_boundary(True)

    def update(loss: torch.Tensor, lr: float) -> tuple[float | None, bool]:
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        engine.step()  # clip, optimizer step, zero grads
        norm = engine.get_global_grad_norm()  # a float or a 0-d tensor, depending on the stage
        norm = None if norm is None else float(norm)
        return norm, _all_finite(loss, torch.tensor(norm or 0.0), engine.device)

    return Updater(engine.backward, no_sync, update)


def _all_finite(loss: torch.Tensor, norm: torch.Tensor, device) -> bool:
    """Whether loss and gradient norm are finite on every process (the mean of 0/1 flags is 1 only then). The flag
    is built where the tensors live and read once, after the all-reduce: one host wait per step on a GPU."""
    ok = (torch.isfinite(loss.detach()) & torch.isfinite(norm.detach())).to(device=device, dtype=torch.float32)
    return bool(all_reduce_mean(ok).item() == 1.0)
