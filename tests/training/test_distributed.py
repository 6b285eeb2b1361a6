"""
Data-parallel training over torch.distributed (Gloo, two CPU processes).

The exactness test: two ranks that each step on their shard of the batches end with identical
parameters, equal to one process that, per step, sums the gradients of the same two batches (the
gradient of the union's bound, each half with the noise its rank drew) and applies one update.
It holds on both gradient paths: DDP over the loss's ELBOModule (Trace_ELBO, IWAE, FIVO, with a
param-store parameter reduced by hand beside it) and the hand-written all-reduce.
"""

import json
import os
import socket
import subprocess
import sys

import pyro
import pytest
import torch
import torch.multiprocessing as mp
from conftest import jsb_available, shared_data_root
from pyro.infer import Trace_ELBO

from pyro_seq.training.checkpoint import get_rng_state, load_checkpoint, set_rng_state
from pyro_seq.data import make_batches
from pyro_seq.training.distributed import DistributedContext, rank_seed, shard_batches
from pyro_seq.guides import SRNNGuide
from pyro_seq.losses import FIVO_ELBO, IWAE_ELBO
from pyro_seq.models import SRNN
from pyro_seq.training.trainer import Trainer

WORLD = 2
EPOCHS = 2
BATCH = 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(3)
    lengths = [5, 7, 6, 4, 8, 7, 5, 6, 3, 7]  # 10 sequences, batch 2: 5 batches, padded to 6
    return [(torch.rand(t, 5, generator=g) < 0.3).double().numpy() for t in lengths]


def _build():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = SRNN(x_dim=5, d_dim=4, z_dim=3, hidden_dim=6).double()
    guide = SRNNGuide(model, kind="smoother", res_q=True).double()
    return model, guide


def _batches(epoch):
    return make_batches(_data(), BATCH, shuffle=True, seed=0, epoch=epoch, dtype=torch.float64)


def _params(model, guide):
    return {f"{prefix}.{n}": p.detach().clone() for prefix, m in (("model", model), ("guide", guide)) for n, p in m.named_parameters()}


def _worker(rank, world, port, out_dir, reduction):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, guide = _build()
        trainer = Trainer(
            model, guide, Trace_ELBO(), _batches, None, seed=0, progress=False,
            distributed=DistributedContext(rank=rank, world_size=world, reduction=reduction),
        )  # fmt: skip
        trainer.fit(EPOCHS)
        torch.save({"params": _params(model, guide), "steps": trainer.global_step}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def _reference(reduction, make_loss=Trace_ELBO, build=None):
    """One process: per step, the gradients of rank 0's and rank 1's batches summed (or averaged), one update."""
    model, guide = (build or _build)()
    trainer = Trainer(model, guide, make_loss(), _batches, None, seed=0, progress=False)  # same optimiser
    streams = []
    for rank in range(WORLD):
        pyro.set_rng_seed(rank_seed(0, rank))
        streams.append(get_rng_state())
    elbo, steps = make_loss(), 0
    for epoch in range(EPOCHS):
        shards = [list(shard_batches(_batches(epoch), r, WORLD)) for r in range(WORLD)]
        for batches in zip(*shards):
            params = set()
            for rank, batch in enumerate(batches):
                set_rng_state(streams[rank])
                with pyro.poutine.trace(param_only=True) as capture:
                    elbo.loss_and_grads(model, guide, batch.x, batch.mask)
                params |= {site["value"].unconstrained() for site in capture.trace.nodes.values()}
                streams[rank] = get_rng_state()
            if reduction == "mean":
                for p in params:
                    p.grad.div_(WORLD)
            trainer.optim(params)
            pyro.infer.util.zero_grads(params)
            steps += 1
    params = _params(model, guide)
    params.update({f"store.{n}": v.detach().clone() for n, v in pyro.get_param_store().items() if n == "tilt"})
    return params, steps


# ------------------------------------------------ the DDP path, the hand path, a failed step


class _TiltedSRNN(SRNN):
    """An SRNN with a parameter that no module holds (``pyro.param``): DDP leaves it to the hand-written reduce."""

    def forward(self, x, mask=None, carry=None):
        z = super().forward(x, mask, carry)
        tilt = pyro.param("tilt", lambda: torch.tensor(0.5, dtype=x.dtype))
        pyro.factor("tilt_factor", -((tilt - 1.0) ** 2) * x.shape[0])
        return z


def _build_tilted():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = _TiltedSRNN(x_dim=5, d_dim=4, z_dim=3, hidden_dim=6).double()
    return model, SRNNGuide(model, kind="smoother", res_q=True).double()


def _iwae():
    return IWAE_ELBO(num_particles=2)


def _fivo():
    return FIVO_ELBO(num_particles=2, resample="always")


#: name -> (loss, modules, DDP on); the gradients must equal one process's sums in every case
PATHS = {
    "iwae-ddp": (_iwae, _build, True),
    "fivo-ddp": (_fivo, _build, True),
    "store-param-ddp": (Trace_ELBO, _build_tilted, True),
    "trace-by-hand": (Trace_ELBO, _build, False),
}


def _paths_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {}
        for name, (make_loss, build, ddp) in PATHS.items():
            model, guide = build()
            context = DistributedContext(rank=rank, world_size=world, ddp=ddp)
            trainer = Trainer(model, guide, make_loss(), _batches, None, seed=0, progress=False, distributed=context)
            trainer.fit(EPOCHS)
            params = _params(model, guide)
            params.update({f"store.{n}": v.detach().clone() for n, v in pyro.get_param_store().items() if n == "tilt"})
            results[name] = {"params": params, "steps": trainer.global_step, "ddp": trainer._ddp is not None}
        # a step that fails on rank 1 only (NaN frames): every rank skips it, none waits forever
        model, guide = _build()
        trainer = Trainer(model, guide, Trace_ELBO(), _batches, None, seed=0, progress=False,
                          distributed=DistributedContext(rank=rank, world_size=world))  # fmt: skip
        batch = next(iter(_batches(0)))
        before = _params(model, guide)
        bad_x = batch.x.clone()
        if rank == 1:
            bad_x[0, 0, 0] = float("nan")
        failed = trainer.step(bad_x, batch.mask)
        unchanged = all(torch.equal(before[n], v) for n, v in _params(model, guide).items())
        passed = trainer.step(batch.x, batch.mask)
        results["failed-step"] = {
            "failed": (failed["ok"], failed["reason"], unchanged),
            "passed": (passed["ok"], trainer.global_step),
            "params": _params(model, guide),
        }
        torch.save(results, os.path.join(out_dir, f"paths{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_and_hand_paths_equal_one_process_on_the_union(tmp_path):
    # IWAE and FIVO through DDP, a param-store parameter DDP leaves to the hand reduce, the hand
    # path itself, and a step that fails on one rank only
    mp.start_processes(_paths_worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    ranks = [torch.load(tmp_path / f"paths{r}.pt", weights_only=False) for r in range(WORLD)]
    for name, (make_loss, build, ddp) in PATHS.items():
        reference, steps = _reference("sum", make_loss, build)
        initial = _params(*build())
        for rank in ranks:
            assert rank[name]["steps"] == steps == EPOCHS * 3, name
            assert rank[name]["ddp"] is ddp, name
        assert set(ranks[0][name]["params"]) == set(reference), name
        for key, value in reference.items():
            assert torch.equal(ranks[0][name]["params"][key], ranks[1][name]["params"][key]), (name, key)
            assert torch.allclose(ranks[0][name]["params"][key], value, rtol=0, atol=1e-12), (name, key)
        assert any(not torch.allclose(initial[n], reference[n]) for n in initial), name
    assert "store.tilt" in ranks[0]["store-param-ddp"]["params"]
    for rank in ranks:
        ok, reason, unchanged = rank["failed-step"]["failed"]
        assert not ok and unchanged, reason
        assert rank["failed-step"]["passed"] == (True, 1)
    assert ranks[0]["failed-step"]["failed"][1] == "a step failed on 1 of 2 ranks"
    assert ranks[1]["failed-step"]["failed"][1].startswith("non-finite values: ")
    for key, value in ranks[0]["failed-step"]["params"].items():
        assert torch.equal(value, ranks[1]["failed-step"]["params"][key]), key


def test_shard_batches_pads_by_wrapping_round():
    assert list(shard_batches(range(5), 0, 2)) == [0, 2, 4]
    assert list(shard_batches(range(5), 1, 2)) == [1, 3, 0]
    assert list(shard_batches(range(4), 1, 2)) == [1, 3]
    assert [list(shard_batches(iter(range(2)), r, 4)) for r in range(4)] == [[0], [1], [0], [1]]
    with pytest.raises(ValueError, match="no batches"):
        list(shard_batches([], 0, 2))
    with pytest.raises(ValueError, match="rank"):
        shard_batches(range(3), 2, 2)


def test_rank_seed():
    assert rank_seed(7, 0) == 7
    seeds = {rank_seed(7, r, s) for r in range(4) for s in (0, 10)}
    assert len(seeds) == 8


def test_context_without_a_process_group_is_refused():
    with pytest.raises(RuntimeError, match="process group"):
        DistributedContext(rank=0, world_size=2)
    with pytest.raises(ValueError, match="reduction"):
        DistributedContext(reduction="max")


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_two_gloo_ranks_equal_one_process_on_the_union(tmp_path, reduction):
    mp.start_processes(_worker, args=(WORLD, _free_port(), str(tmp_path), reduction), nprocs=WORLD, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    reference, steps = _reference(reduction)
    assert ranks[0]["steps"] == ranks[1]["steps"] == steps == EPOCHS * 3
    initial = _params(*_build())
    for name, value in reference.items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
        assert torch.allclose(ranks[0]["params"][name], value, rtol=0, atol=1e-12), name
    assert any(not torch.allclose(initial[n], reference[n]) for n in reference)  # training moved them


# -------------------------------------------------------------------------------- CLI (torchrun)

DATA_ROOT = shared_data_root()
needs_jsb = pytest.mark.skipif(not jsb_available(), reason=f"JSB Chorales not found under {DATA_ROOT}")

TINY = [
    "--data", "jsb", "--data-root", str(DATA_ROOT),
    "--max-train-sequences", "8", "--max-eval-sequences", "4", "--max-length", "30", "--batch-size", "2",
    "--d-dim", "6", "--z-dim", "3", "--a-dim", "6", "--hidden-dim", "8",
    "--warmup-steps", "5", "--eval-samples", "2", "--device", "cpu", "--no-progress", "--seed", "1",
]  # fmt: skip


def _cli(out, epochs, nproc, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if nproc:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd = launcher + ["-m", "pyro_seq", "train", "srnn", "--distributed"]
    else:
        cmd = [sys.executable, "-m", "pyro_seq", "train", "srnn"]
    cmd += TINY + ["--out", str(out), "--epochs", str(epochs), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@needs_jsb
def test_torchrun_two_ranks_then_resume_on_one(tmp_path):
    out = tmp_path / "run"
    first = _cli(out, 1, WORLD)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "distributed: 2 ranks, gloo, 4 examples per step" in first.stderr
    state = load_checkpoint(out / "last.pt")
    assert state["world_size"] == WORLD and len(state["rng_per_rank"]) == WORLD
    steps_two = state["global_step"]  # ceil(batches / 2): 8 pieces cut into <= 30 frames, batches of 2
    epochs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["event"] == "epoch"] == [1]  # rank 0 wrote the log alone
    second = _cli(out, 2, 0, "--resume")  # one process continues the two-rank run
    assert second.returncode == 0, second.stderr[-3000:]
    state = load_checkpoint(out / "last.pt")
    num_batches = state["global_step"] - steps_two  # one rank takes every batch
    assert state["epoch"] == 2 and steps_two == -(-num_batches // WORLD) and num_batches > 2
    assert "world_size" not in state
    steps_one = state["global_step"]
    third = _cli(out, 3, WORLD, "--resume")  # and two ranks again
    assert third.returncode == 0, third.stderr[-3000:]
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 3 and state["global_step"] == steps_one + steps_two
    assert (out / "test.json").exists()


def test_distributed_flag_outside_torchrun_is_a_clear_error(tmp_path, capsys):
    from pyro_seq.cli import main

    env = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k in os.environ}
    try:
        assert main(["train", "srnn", "--distributed", "--out", str(tmp_path / "x"), "--data", "chorales"]) == 1
    finally:
        os.environ.update(env)
    err = capsys.readouterr().err
    assert "pyro-seq: error: --distributed: environment variable(s) RANK" in err and "torchrun" in err


def test_torchrun_semi_supervised(tmp_path):
    out = tmp_path / "m2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", "-m", "pyro_seq",
           "train", "m2", "--distributed", "--data", "digits", "--z-dim", "4", "--hidden-dims", "10", "--epochs", "1",
           "--eval-samples", "2", "--device", "cpu", "--no-progress", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint(out / "last.pt")
    assert state["world_size"] == WORLD and state["global_step"] == 6  # 11 batches of digits over 2 ranks
    assert json.loads((out / "test.json").read_text())["last"]["num_items"] == 400
