r"""
Compare guides (and models) with ArviZ
======================================

Tutorial: compare guides (and models) with ArviZ.

A sequential latent-variable model is only as well measured as its guide lets
it be: every number reported for it is a *lower bound* on :math:`\log p(x)`
whose tightness depends on :math:`q(z \mid x)`. This tutorial takes five
model/guide pairs trained on JSB Chorales,

=================  ==========================================================
``srnn_filter``    SRNN, filter guide :math:`q(z_t \mid z_{t-1}, d_t, x_t)` (no look-ahead)
``srnn_smoother``  SRNN, smoother guide (backward GRU over :math:`x_{t:T}`), no Res_q
``srnn_resq``      SRNN, smoother guide with Res_q (posterior mean = prior mean + residual)
``zforcing``       Z-Forcing, backward-LSTM guide
``zforcing_aux``   Z-Forcing with the auxiliary cost :math:`\log p_\xi(b_t \mid z_t)`
=================  ==========================================================

and looks at them from four sides:

1. **Bounds on the test split** (``pyro_seq.bounds.evaluate``), as negative
   log-likelihoods in nats per frame (lower is better), with ``total`` =
   total nats / total frames and, in brackets, ``seq_mean`` = the mean over
   sequences of each sequence's nats per frame:

   - ``-ELBO``: :math:`-\mathbb E_q[\log p(x, z) - \log q(z \mid x)]`. It exceeds
     :math:`-\log p(x)` by :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z \mid x))`:
     the worse the guide, the looser the bound.
   - ``-IWAE`` with :math:`K` samples (Burda et al. 2016):
     :math:`-\log \frac1K \sum_k w_k`, :math:`w_k = p(x, z_k) / q(z_k \mid x)`;
     never above ``-ELBO`` (same samples) and tighter as :math:`K` grows. A large
     **ELBO − IWAE gap** means the log weights vary a lot: the guide is far from
     the posterior (an equally large gap between two guides of *one* model
     says which one is closer). A small gap means either a good guide or that
     :math:`K` is too small to find the better paths (check :math:`\hat k`).
   - ``-FIVO`` with :math:`K` particles (Maddison et al. 2017): a particle
     filter with the guide as proposal, resampling when the effective sample
     size drops below :math:`K/2`. Resampling step by step keeps the weight
     variance from growing with the length of the piece, so FIVO is usually the
     tightest bound for a *filtering* guide. For a *smoothing* guide it can be
     looser than IWAE: the intermediate weights only see :math:`x_{1:t}`, so
     resampling throws away particles that explain the *future* well.
   - All three are bounds for the same model, so comparing rows of different
     models (SRNN vs Z-Forcing) compares lower bounds, each as tight as its
     guide allows.

2. **ArviZ comparison** (``pyro_seq.diagnostics.compare_inference_data``, the
   table of ``compare_guides`` from InferenceData objects that keep the
   weights): ``elpd`` :math:`= \sum_n \log \hat p_K(x_n)`, the importance-weighted
   estimate summed over the held-out pieces (no leave-one-out needed: they
   played no part in training); ``elpd_diff`` and ``dse``, the difference to
   the best row and its standard error (a difference under about two ``dse``
   is not resolved by these test pieces); ``se``; ``weight``, stacking weights;
   ``khat_share``, the share of pieces with Pareto :math:`\hat k > 0.7`;
   ``nats_per_frame`` = :math:`-\mathrm{elpd}` / frames (close to ``-IWAE``,
   drawn with other random numbers).

   **Pareto** :math:`\hat k` (Yao et al. 2018, arXiv:1802.02538) is the shape of
   a generalized Pareto distribution fitted to the largest importance weights
   of each piece (ArviZ's ``psislw``; it needs :math:`K \ge 21`). It estimates
   how heavy the tail of :math:`w = p(x, z) / q(z \mid x)` is:
   :math:`\hat k < 0.5` -- finite variance, the importance-weighted estimate
   converges fast; :math:`0.5 \le \hat k \le 0.7` -- infinite variance but still
   usable; :math:`\hat k > 0.7` -- the guide's tails are too light for that
   piece: :math:`\log \hat p_K(x_n)` is unreliable (practically unbounded
   Monte Carlo error, and the number of samples needed grows very fast), and
   Yao et al. read it as "this variational approximation is poor here". The
   weight is a product over time steps, so long pieces reach large
   :math:`\hat k` first. The ``khat.png`` panels show :math:`\hat k` per piece
   with lines at 0.5, 0.7 and 1.

3. **Latent health** (``latent_health``): the KL of the guide from the prior
   per piece and time step along a posterior path (``kl_heatmap.png``: where in
   each piece the latents carry information; a dark heat map is a collapsed
   posterior), and per latent unit (``kl_per_unit.png``). A unit is **active**
   (Burda et al. 2016) when the variance over all test frames of its posterior
   mean exceeds 0.01: the unit's posterior moves with the data. Inactive units
   (grey bars) have collapsed to the prior; the auxiliary cost of Z-Forcing and
   KL warm-up are meant to keep more of them active. Read the count together
   with the bars: in SRNN and Z-Forcing the *prior* of :math:`z_t` moves with
   the observed past too (through :math:`d_t` or :math:`h_{t-1}`), and with Res_q
   the posterior mean is the prior mean plus a residual, so a unit whose
   posterior equals its prior (KL near 0) can still count as active. The KL per
   unit is the direct measure of how many nats each unit carries.

4. **Posterior predictive check** (``music_ppc`` / ``plot_music_ppc``) of the
   best guide by elpd: notes per frame and note durations of the test pieces
   against draws of the emission along guide samples. The emission at step
   :math:`t` also depends on the *observed* past, so these are one-step-ahead
   draws: mismatches (too many short notes, too wide chords) point at the
   emission (independent Bernoulli keys) more than at the latents.

Models: each pair is **loaded** from a ``best.pt`` written by ``pyro-seq train``
(options ``--srnn-filter``, ``--srnn-smoother``, ``--srnn-resq``, ``--zforcing``,
``--zforcing-aux``; by default the runs of ``benchmarks/srnn_guides.sh`` and
``benchmarks/zforcing_claim.py`` under ``runs/``, used when they exist) or, when
there is none, **trained** here with :class:`pyro_seq.training.trainer.Trainer` for
``--epochs`` epochs with the same model sizes and losses as those runs (models,
guides and losses built by the family's recipe (``pyro_seq.recipes.RECIPES``) from a run config; the
checkpoints go to ``OUT/train/<name>/``).

Run::

    python tutorials/compare_guides.py --data-root ../shared/data   # loads runs/... if present, else trains
    python tutorials/compare_guides.py --data-root ../shared/data --zforcing-aux runs/x/best.pt
    python tutorials/compare_guides.py --data-root ../shared/data --smoke   # tiny models, seconds (tests)

Everything goes to ``--out`` (default ``runs/tutorial_compare_guides``):
``compare.png``, ``khat.png``, ``kl_heatmap.png``, ``kl_per_unit.png``,
``ppc_<guide>.png`` and ``results.json``.

**References**

[1] Yuri Burda, Roger Grosse, Ruslan Salakhutdinov, "Importance Weighted
    Autoencoders", ICLR 2016, arXiv:1509.00519.

[2] Chris J. Maddison, Dieterich Lawson, George Tucker, Nicolas Heess, Mohammad
    Norouzi, Andriy Mnih, Arnaud Doucet, Yee Whye Teh, "Filtering Variational
    Objectives", NIPS 2017, arXiv:1705.09279.

[3] Yuling Yao, Aki Vehtari, Daniel Simpson, Andrew Gelman, "Yes, but Did It
    Work?: Evaluating Variational Inference", ICML 2018, arXiv:1802.02538.
"""

import argparse
import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402

from pyro_seq.bounds import evaluate  # noqa: E402
from pyro_seq.recipes import RECIPES, load_model  # noqa: E402
from pyro_seq.data import load_music, make_batches  # noqa: E402
from pyro_seq.diagnostics import (  # noqa: E402
    compare_inference_data,
    latent_health,
    music_ppc,
    plot_compare,
    plot_kl_heatmap,
    plot_kl_per_unit,
    plot_khat,
    plot_music_ppc,
    to_inference_data,
)
from pyro_seq.training.trainer import BEST_CHECKPOINT, Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: The five pairs: name -> (model kind, option, default checkpoint under the repository, label).
PAIRS = {
    "srnn_filter": ("srnn", "--srnn-filter", "runs/guides/jsb/filter/best.pt", "SRNN, filter"),
    "srnn_smoother": ("srnn", "--srnn-smoother", "runs/guides/jsb/smoother/best.pt", "SRNN, smoother"),
    "srnn_resq": ("srnn", "--srnn-resq", "runs/claim/jsb/srnn_warmup/best.pt", "SRNN, smoother + Res_q"),
    "zforcing": ("zforcing", "--zforcing", "runs/claim/jsb/zforcing_warmup/best.pt", "Z-Forcing"),
    "zforcing_aux": ("zforcing", "--zforcing-aux", "runs/claim/jsb/zforcing_both/best.pt", "Z-Forcing + aux cost"),
}

#: Model sizes: those of the benchmark runs (the default checkpoints), and tiny ones for --smoke.
SIZES = {
    ("srnn", False): dict(d_dim=128, z_dim=32, hidden_dim=256),
    ("srnn", True): dict(d_dim=8, z_dim=3, hidden_dim=16),
    ("zforcing", False): dict(emb_dim=128, h_dim=256, z_dim=32, hidden_dim=256),
    ("zforcing", True): dict(emb_dim=8, h_dim=8, z_dim=3, hidden_dim=16),
}


def run_config(name, x_dim, smoke, warmup_steps, aux_weight):
    """
    The run config of pair ``name`` in the layout ``pyro-seq train`` writes (``model``,
    ``guide``, ``loss``), for ``pyro_seq.recipes.RECIPES[kind].build(kind, config)``.
    """
    kind = PAIRS[name][0]
    sizes = SIZES[kind, smoke]
    model = {"x_dim": x_dim, **sizes, "likelihood": "bernoulli", "dropout": 0.0 if smoke else 0.3}
    if kind == "srnn":
        guide = {
            "kind": "filter" if name == "srnn_filter" else "smoother",
            "res_q": name == "srnn_resq",
            "a_dim": sizes["d_dim"],
            "hidden_dim": sizes["hidden_dim"],
            "auxiliary": None,
        }
    else:
        aux = name == "zforcing_aux"
        guide = {
            "b_dim": None,
            "hidden_dim": sizes["hidden_dim"],
            "auxiliary": "z" if aux else None,
            "backward_prediction": aux,
        }
    aux = name == "zforcing_aux"
    loss = {
        "elbo": "meanfield",
        "warmup_start": 0.2,  # KL warm-up: beta from 0.2 to 1
        "warmup_steps": warmup_steps,
        "num_particles": 1,
        "aux_weight": aux_weight if aux else 0.0,  # Z-Forcing auxiliary cost weight
        "aux_start": None,
        "aux_steps": 0,
        "backward_weight": 1.0 if aux else 0.0,  # backward LSTM predicts x_{t-1}
    }
    return {"model": model, "guide": guide, "loss": loss}


def train_pair(name, args, x_dim, train, valid, out):
    """Train pair ``name`` with the Trainer; returns ``(model, guide, source)`` from its best.pt."""
    kind = PAIRS[name][0]
    batch_size = args.batch_size
    steps = args.epochs * math.ceil(len(train) / batch_size)
    warmup = args.warmup_steps if args.warmup_steps is not None else min(1000, max(1, steps // 2))
    config = run_config(name, x_dim, args.smoke, warmup, args.aux_weight)
    config["data"] = {"name": args.data, "batch_size": batch_size, "max_length": args.max_length}
    config["train"] = {"lr": args.lr, "lrd": args.lrd, "clip_norm": 10.0, "seed": args.seed, "epochs": args.epochs}
    pyro.set_rng_seed(args.seed)
    model, guide, loss = RECIPES[kind].build(kind, config)  # the CLI's builders: same modules, same loss
    trainer = Trainer(
        model,
        guide,
        loss,
        lambda epoch: make_batches(train, batch_size, shuffle=True, seed=args.seed, epoch=epoch),
        lambda epoch: make_batches(valid, batch_size, shuffle=False),
        lr=args.lr,
        lrd=args.lrd,
        clip_norm=10.0,
        out_dir=out,
        seed=args.seed,
        kind=kind,
        config=config,
        progress=False,
    )
    summary = trainer.fit(args.epochs)
    model, guide, _, state = load_model(out / BEST_CHECKPOINT, kind=kind)
    print(
        f"  {name:<14} trained {summary['epochs']} epochs, best valid -ELBO "
        f"{summary['best_valid']:.4f} nats/frame at epoch {summary['best_epoch']}"
    )
    source = {"trained": True, "checkpoint": str(out / BEST_CHECKPOINT), "epoch": state.get("epoch")}
    return model, guide, source


def get_pair(name, args, x_dim, train, valid, out):
    """Load pair ``name`` from its checkpoint if there is one, else train it."""
    kind, option, default, _ = PAIRS[name]
    given = getattr(args, option[2:].replace("-", "_"))
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise FileNotFoundError(f"{option} {path}: no such checkpoint")
    else:
        path = ROOT / default
        if args.smoke or args.no_checkpoints or not path.is_file():
            return train_pair(name, args, x_dim, train, valid, out / "train" / name)
    model, guide, _, state = load_model(path, kind=kind)
    data = state["config"].get("data", {}).get("name")
    if data is not None and data != args.data:
        if given is not None:
            raise ValueError(f"{option} {path} was trained on {data!r}, this run evaluates on {args.data!r}")
        print(f"  {name:<14} {path} was trained on {data!r}, not {args.data!r}: training instead")
        return train_pair(name, args, x_dim, train, valid, out / "train" / name)
    print(f"  {name:<14} loaded {path} (epoch {state.get('epoch')})")
    return model, guide, {"trained": False, "checkpoint": str(path), "epoch": state.get("epoch")}


def _json(value):
    """JSON-able copy: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_bounds(bounds, sources):
    some = next(iter(bounds.values()))
    k, f = some["num_samples"], some.get("fivo_particles")
    print(
        f"\ntest bounds, nats per frame (lower is better): total nats / total frames "
        f"[mean over sequences]; {some['num_sequences']} sequences, {some['num_frames']} frames"
    )
    heads = ["-ELBO", f"-IWAE (K={k})", f"-FIVO (K={f})"]
    print(f"  {'guide':<14} {'source':<8}" + "".join(f"{h:>20}" for h in heads) + f"{'ELBO-IWAE':>11}")
    for name, r in bounds.items():
        cells = "".join(f"{r[b]['total']:>10.4f} [{r[b]['seq_mean']:.4f}]" for b in ("elbo", "iwae", "fivo"))
        source = "trained" if sources[name]["trained"] else "loaded"
        gap = r["elbo"]["total"] - r["iwae"]["total"]
        print(f"  {name:<14} {source:<8}{cells}{gap:>11.4f}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Compare SRNN and Z-Forcing guides: bounds, ArviZ comparison, k-hat, latent health, PPC"
    )
    parser.add_argument("--data", default="jsb", help="music data set (default jsb; the default checkpoints are JSB)")
    parser.add_argument("--data-root", default=None, help="data root (default: $PYRO_SEQ_DATA, else ~/.cache/pyro_seq)")
    parser.add_argument("--out", default="runs/tutorial_compare_guides")
    for _, option, default, label in PAIRS.values():
        parser.add_argument(option, default=None, metavar="PATH", help=f"best.pt of {label} (default: {default} if present)")
    parser.add_argument("--no-checkpoints", action="store_true", help="train every pair, ignoring the default checkpoints")
    parser.add_argument("--epochs", type=int, default=30, help="epochs for the pairs trained here")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--lrd", type=float, default=0.9998, help="learning-rate decay per step")
    parser.add_argument("--warmup-steps", type=int, default=None, help="KL warm-up steps (default: min(1000, half the steps))")
    parser.add_argument("--aux-weight", type=float, default=1e-3, help="Z-Forcing auxiliary cost weight of zforcing_aux")
    parser.add_argument("--max-length", type=int, default=None, help="cut every sequence to its first L frames")
    parser.add_argument("--num-samples", type=int, default=100, help="K for IWAE, elpd and k-hat (>= 21 for k-hat)")
    parser.add_argument("--fivo-particles", type=int, default=100)
    parser.add_argument("--ppc-draws", type=int, default=20, help="posterior predictive draws of the best guide")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny models, 8/4 sequences of <= 40 frames, seconds")
    args = parser.parse_args(argv)
    if args.num_samples < 21:
        parser.error("--num-samples must be >= 21: ArviZ fits the Pareto tail to more than 4 of the K weights")
    if args.smoke:
        args.epochs, args.batch_size = 2, 8
        args.num_samples, args.fivo_particles, args.ppc_draws = 24, 8, 5
        args.max_length = args.max_length or 40
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. data, and the five model/guide pairs (loaded or trained)
    splits = {s: list(load_music(args.data, s, data_root=args.data_root)) for s in ("train", "valid", "test")}
    if args.smoke:
        splits = {"train": splits["train"][:8], "valid": splits["valid"][:4], "test": splits["test"][:4]}
    if args.max_length:
        splits = {s: [seq[: args.max_length] for seq in seqs] for s, seqs in splits.items()}
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    x_dim = int(test[0].shape[-1])
    print(f"{args.data}: {len(train)} train, {len(valid)} valid, {len(test)} test sequences")
    pairs, sources = {}, {}
    for name in PAIRS:
        model, guide, sources[name] = get_pair(name, args, x_dim, train, valid, out)
        pairs[name] = (model, guide)
    batches = list(make_batches(test, args.batch_size, shuffle=False))  # one order for everything below

    # 2. ELBO, IWAE and FIVO bounds on the test split
    bounds = {}
    for name, (model, guide) in pairs.items():
        pyro.set_rng_seed(args.seed)
        bounds[name] = evaluate(
            model, guide, batches, num_samples=args.num_samples, fivo_particles=args.fivo_particles
        )
    print_bounds(bounds, sources)

    # 3. ArviZ: per-sequence log weights -> InferenceData -> compare table; k-hat, latent health
    idatas, health = {}, {}
    for name, (model, guide) in pairs.items():
        pyro.set_rng_seed(args.seed + 1)
        idatas[name] = to_inference_data(model, guide, batches, num_samples=args.num_samples, num_shown=0)
        pyro.set_rng_seed(args.seed)
        health[name] = latent_health(model, guide, batches)
    table = compare_inference_data(idatas)  # what compare_guides(pairs, batches) returns
    best = str(table.index[0])
    print(f"\nArviZ comparison (K={args.num_samples}; elpd in nats, best first):")
    print(table.to_string(float_format="{:.4f}".format))
    print(f"\n  {'guide':<14} {'k>0.7':>7} {'max k':>7} {'ESS/K':>7} {'KL/frame':>9} {'active units':>13}")
    khat, latents = {}, {}
    for name in PAIRS:
        imp = idatas[name].importance
        k = imp["pareto_k"].values
        khat[name] = {
            "share_above_0.7": float(np.mean(k > 0.7)),
            "max": float(np.nanmax(k)),
            "mean_ess_fraction": float(np.mean(imp["ess"].values) / args.num_samples),
            "pareto_k": k,
        }
        h = health[name]
        latents[name] = {
            "kl_per_frame": h.kl_per_frame,
            "active_units": h.active_units,
            "z_dim": int(h.kl_per_unit.size),
            "kl_per_unit": h.kl_per_unit,
            "posterior_mean_variance": h.posterior_mean_variance,
        }
        print(
            f"  {name:<14} {khat[name]['share_above_0.7']:>7.2f} {khat[name]['max']:>7.2f} "
            f"{khat[name]['mean_ess_fraction']:>7.2f} {h.kl_per_frame:>9.4f} "
            f"{h.active_units:>6d} of {h.kl_per_unit.size:<3d}"
        )

    # pictures
    files = []
    plot_compare(table, path=out / "compare.png")
    files.append("compare.png")
    n = len(PAIRS)
    fig, axes = plt.subplots(n, 1, figsize=(7.0, 2.6 * n), squeeze=False)
    for ax, name in zip(axes[:, 0], PAIRS):
        plot_khat(idatas[name], ax=ax)
        ax.set_title(f"{name}: PSIS Pareto k-hat per test sequence")
    fig.tight_layout()
    fig.savefig(out / "khat.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    files.append("khat.png")
    width = max(6.0, min(14.0, max(len(s) for s in test) / 10))
    for file, plot, height in (("kl_heatmap.png", plot_kl_heatmap, 3.0), ("kl_per_unit.png", plot_kl_per_unit, 2.4)):
        fig, axes = plt.subplots(n, 1, figsize=(width, height * n), squeeze=False)
        for ax, name in zip(axes[:, 0], PAIRS):
            plot(health[name], ax=ax)
            ax.set_title(f"{name}: {ax.get_title()}")
        fig.tight_layout()
        fig.savefig(out / file, dpi=100, bbox_inches="tight")
        plt.close(fig)
        files.append(file)

    # 4. posterior predictive check of the best guide by elpd
    model, guide = pairs[best]
    pyro.set_rng_seed(args.seed)
    ppc = music_ppc(model, guide, batches, num_draws=args.ppc_draws)
    plot_music_ppc(ppc, path=out / f"ppc_{best}.png")
    files.append(f"ppc_{best}.png")
    observed = {k: float(np.mean(ppc.observed_data[k].values)) for k in ppc.observed_data.data_vars}
    predicted = {k: float(np.mean(ppc.posterior_predictive[k].values)) for k in ppc.observed_data.data_vars}
    print(
        f"\nposterior predictive check of {best} ({args.ppc_draws} draws): mean notes per frame "
        f"{observed['notes_per_frame']:.2f} observed, {predicted['notes_per_frame']:.2f} predicted; "
        f"mean note duration {observed['note_duration']:.2f} vs {predicted['note_duration']:.2f} frames"
    )

    records = table.reset_index().rename(columns={"index": "guide"}).to_dict("records")
    result = {
        "data": args.data,
        "smoke": args.smoke,
        "num_samples": args.num_samples,
        "fivo_particles": args.fivo_particles,
        "guides": list(PAIRS),
        "sources": sources,
        "bounds": bounds,
        "compare": records,
        "best": best,
        "khat": khat,
        "latents": latents,
        "ppc": {"observed_mean": observed, "predicted_mean": predicted, "num_draws": args.ppc_draws},
        "files": files,
        "seconds": time.perf_counter() - start,
    }
    (out / "results.json").write_text(json.dumps(_json(result), indent=2) + "\n")
    print(f"\nfigures and results.json in {out} ({result['seconds']:.1f} s)")
    return result


if __name__ == "__main__":
    main()
