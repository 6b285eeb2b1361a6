"""
Data-parallel step time of the trainer on its two gradient paths, two Gloo ranks on CPU: the
hand-written flat all-reduce after ``loss.loss_and_grads`` (``DistributedContext(ddp=False)``)
against ``DistributedDataParallel`` over the loss's ``ELBOModule`` (the default for ELBOs), with
DDP's ``find_unused_parameters`` on (what the trainer uses) and off (the floor of DDP: no graph
traversal per step), for Trace_ELBO, IWAE_ELBO and FIVO_ELBO on an SRNN.

    OMP_NUM_THREADS=1 python benchmarks/ddp_step.py [--steps 8] [--warmup 2] [--batch 8] [--time 40]
        [--size small|paper] [--losses trace,iwae,fivo]

Each rank builds the same SRNN (``small``: d = z = 32, MLP width 64; ``paper``: d = 300, z = 100,
width 500) and steps on its own random binary batches (88 keys); every arm starts from the same
parameters and random state. Rank 0 prints one JSON line per arm: milliseconds per step (mean and
median of the timed steps, each step ended by a barrier so the ranks' clocks agree) and the
number of gradient elements all-reduced. The arms alternate in rounds (hand, DDP, DDP without
unused-parameter search, then again), so that a busy machine slows them alike.
"""

import argparse
import json
import os
import socket
import statistics
import time

import pyro
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pyro.infer import Trace_ELBO
from torch.nn.parallel import DistributedDataParallel

from pyro_seq.guides import SRNNGuide
from pyro_seq.losses import FIVO_ELBO, IWAE_ELBO
from pyro_seq.models import SRNN
from pyro_seq.training import Trainer
from pyro_seq.training.distributed import DistributedContext, _allreduce_sum

SIZES = {"small": dict(d_dim=32, z_dim=32, hidden_dim=64), "paper": dict(d_dim=300, z_dim=100, hidden_dim=500)}
LOSSES = {
    "trace": lambda: Trace_ELBO(),
    "iwae": lambda: IWAE_ELBO(num_particles=4),
    "fivo": lambda: FIVO_ELBO(num_particles=4, resample="ess"),
}


class NoSearchContext(DistributedContext):
    """DDP without ``find_unused_parameters`` (only valid when every step uses every parameter)."""

    def data_parallel(self, module, device):
        wrapped = DistributedDataParallel(module, find_unused_parameters=False, init_sync=False, forward_sync_buffers=False)
        wrapped.register_comm_hook(None, _allreduce_sum)
        return wrapped


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(rank, step, args):
    g = torch.Generator().manual_seed(1000 * rank + step)
    x = (torch.rand(args.batch, args.time, 88, generator=g) < 0.1).float()
    mask = torch.ones(args.batch, args.time, dtype=torch.bool)
    return x, mask


def _arm(rank, world, args, loss_name, path):
    pyro.clear_param_store()
    torch.manual_seed(0)
    model = SRNN(x_dim=88, **SIZES[args.size])
    guide = SRNNGuide(model)
    if path == "hand":
        context = DistributedContext(rank=rank, world_size=world, ddp=False)
    elif path == "ddp":
        context = DistributedContext(rank=rank, world_size=world)
    else:
        context = NoSearchContext(rank=rank, world_size=world)
    trainer = Trainer(model, guide, LOSSES[loss_name](), [], None, seed=0, progress=False, distributed=context)
    times = []
    for step in range(args.warmup + args.steps):
        x, mask = _batch(rank, step, args)
        dist.barrier()
        start = time.perf_counter()
        result = trainer.step(x, mask)
        dist.barrier()
        if step >= args.warmup:
            times.append(1000 * (time.perf_counter() - start))
        assert result["ok"], result
    numel = sum(p.numel() for p in trainer._reduce_params())
    return times, numel, trainer._ddp is not None


def _worker(rank, world, port, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for loss_name in args.losses.split(","):
            times = {"hand": [], "ddp": [], "ddp-no-unused-search": []}
            numel = ddp_used = None
            for _ in range(args.rounds):
                for path in times:
                    t, numel, used = _arm(rank, world, args, loss_name, path)
                    times[path] += t
                    ddp_used = used if path == "ddp" else ddp_used
            if rank == 0:
                for path, t in times.items():
                    print(json.dumps({
                        "loss": loss_name, "path": path, "size": args.size, "batch": args.batch, "time": args.time,
                        "ms_per_step_mean": round(statistics.mean(t), 1), "ms_per_step_median": round(statistics.median(t), 1),
                        "steps": len(t), "grad_elements": numel, "ddp_used": ddp_used if path == "ddp" else path != "hand",
                    }), flush=True)  # fmt: skip
    finally:
        dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--time", type=int, default=40)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--losses", default="trace,iwae,fivo")
    args = parser.parse_args()
    mp.start_processes(_worker, args=(2, _free_port(), args), nprocs=2, start_method="spawn")


if __name__ == "__main__":
    main()
