"""
The protein family (``pyro-seq train localizer|secondary-structure``): its options, the run config
-> ``(model, guide, loss)`` builder and the :class:`ProteinRecipe` that
:func:`pyro_seq.recipes.train` runs.

Training is :class:`~pyro.infer.Trace_ELBO`: for the deterministic networks the guide is empty and
the loss is the cross-entropy; with ``--bayesian-last-layer`` the guide is
:class:`~pyro_seq.contrib.protein.LastLayerGuide` and the loss the ELBO of the output layer's
weights. The validation figure is the error (%) on the protocol's selection split; the best
checkpoint is then tested on the protocol's test sets with every prediction variant. The protocol
and the metrics are :mod:`pyro_seq.contrib.protein.metrics`.
"""

import json
import logging
from pathlib import Path
from typing import Any, Dict, Tuple

from pyro_seq.contrib.protein.metrics import (
    PROTOCOLS,
    evaluate_protein,
    localization_metrics,
    localization_splits,
    structure_metrics,
    structure_splits,
    test_sets_of,
)
from pyro_seq.guides import PointEstimateGuide
from pyro_seq.recipes.base import Recipe, RunData, evaluation_path, resolved_path
from pyro_seq.recipes.options import nonnegative_int, positive_int
from pyro_seq.training.trainer import BEST_CHECKPOINT

__all__ = ["PROTEIN_MODELS", "ProteinRecipe", "build_protein"]

logger = logging.getLogger("pyro_seq.recipes")

#: Command-line kinds and their model classes (names in :mod:`pyro_seq.contrib.protein.models`).
PROTEIN_MODELS = {"localizer": "ProteinLocalizer", "secondary-structure": "SecondaryStructureBLSTM"}


def build_protein(kind: str, config: Dict[str, Any]) -> Tuple[Any, Any, Any]:
    """
    Build a protein model, its guide and the loss from a run config ``{"model": kwargs,
    "guide": kwargs}``: :class:`~pyro_seq.contrib.protein.LastLayerGuide` when the model has a Bayesian
    output layer, else the empty :class:`PointEstimateGuide`; :class:`~pyro.infer.Trace_ELBO`.
    """
    from pyro.infer import Trace_ELBO

    from pyro_seq.contrib.protein import models
    from pyro_seq.contrib.protein.guides import LastLayerGuide

    model = getattr(models, PROTEIN_MODELS[kind])(**config["model"])
    guide = LastLayerGuide(model, **config.get("guide", {})) if model.bayesian_last_layer else PointEstimateGuide()
    return model, guide, Trace_ELBO(max_plate_nesting=1)


def _validation_error(kind: str, num_samples: int = 1):
    """The trainer's validation figure: error in % (lower is better)."""
    metrics_fn = localization_metrics if kind == "localizer" else structure_metrics
    key = "accuracy" if kind == "localizer" else "q8"

    def eval_fn(model, guide, batches):
        variant = "bayesian" if model.bayesian_last_layer else "deterministic"
        return 100.0 * (1.0 - metrics_fn(model, guide, list(batches), variant, num_samples)[0][key])

    return eval_fn


#: What a checkpoint's run config of this family holds (see :meth:`Recipe.config_schema`).
CONFIG_SCHEMA = {
    "model.num_classes": "?int", "model.widths": "?ints", "model.filters": "?int", "model.hidden": "?int",
    "model.attention_dim": "?int", "model.ff_dim": "?int", "model.dense": "?int", "model.dropout": "?real",
    "model.membrane_head": "?bool", "model.bayesian_last_layer": "?bool", "model.prior_scale": "?real",
    "model.num_data": "?int|None", "guide.init_scale": "?real",
}  # fmt: skip


class ProteinRecipe(Recipe):
    """Protein classifiers with calibrated uncertainty: localisation (DeepLoc) and secondary structure (CB513)."""

    kinds = {
        "localizer": "the conv-BLSTM-attention subcellular localiser (DeepLoc)",
        "secondary-structure": "the BLSTM 8-class secondary-structure model (CB513)",
    }
    options = ("data_root", "batch_size", "weight_decay", "patience", "hidden", "dense", "dropout", "prior_scale", "mc_samples")
    defaults = {"epochs": 30, "batch_size": 32, "clip_norm": 5.0, "hidden": 64, "dense": 64, "dropout": 0.25, "prior_scale": 1.0, "mc_samples": 20}
    units = ("nats/protein", "error {:.2f}%")

    def add_arguments(self, parser, kind):
        g = parser.add_argument_group("data and protocol")
        g.add_argument("--protocol", choices=PROTOCOLS, default="deeploc", help="localizer: deeploc (train on the DeepLoc validation file, test on its test split and setHARD) or cv (folds over both files); secondary-structure always folds CB513")
        g.add_argument("--num-folds", type=positive_int, default=5)
        g.add_argument("--fold", type=nonnegative_int, default=0, help="the test fold (the next one selects the checkpoint)")
        g.add_argument("--max-length", type=positive_int, default=1000, help="keep the first and last max_length/2 residues of longer proteins (DeepLoc's policy)")
        g = parser.add_argument_group("model")
        g.add_argument("--encoding", choices=("onehot", "blosum62"), default="onehot")
        g.add_argument("--filters", type=positive_int, default=20, help="convolution filters per width")
        g.add_argument("--bayesian-last-layer", action="store_true", help="Gaussian prior and a mean-field guide over the output layer's weights (SVI)")
        g = parser.add_argument_group("test")

    def check(self, kind, args, context):
        if not 0 <= args.fold < args.num_folds:
            raise ValueError(f"--fold must be in 0..{args.num_folds - 1}, got {args.fold}")

    def load_data(self, kind, args):
        from pyro_seq.contrib.protein.data import protein_batches

        if kind == "localizer":
            train, valid, tests = localization_splits(args.protocol, args.fold, args.num_folds, args.data_root, args.seed)
        else:
            train, valid, tests = structure_splits(args.fold, args.num_folds, args.data_root, args.seed)
        logger.info("%s: %d training, %d selection proteins; test sets %s", kind, len(train), len(valid), {k: len(v) for k, v in tests.items()})

        def train_batches(epoch):
            return protein_batches(train, args.batch_size, shuffle=True, seed=args.seed, epoch=epoch, max_length=args.max_length)

        config = {
            "protocol": args.protocol if kind == "localizer" else "cv",
            "fold": args.fold,
            "num_folds": args.num_folds,
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "data_root": resolved_path(args.data_root),
        }
        return RunData(train_batches, protein_batches(valid, 64, max_length=args.max_length), config, {"num_train": len(train)})

    def config(self, kind, args, data):
        model = {
            "encoding": args.encoding,
            "filters": args.filters,
            "hidden": args.hidden,
            "dense": args.dense,
            "dropout": args.dropout,
            "bayesian_last_layer": args.bayesian_last_layer,
            "prior_scale": args.prior_scale,
            "num_data": data.info["num_train"] if args.bayesian_last_layer else None,
        }
        if kind == "localizer":
            model["membrane_head"] = True
        return {"model": model, "guide": {}}

    def build(self, kind, config):
        return build_protein(kind, config)

    def config_schema(self, kind):
        return {**super().config_schema(kind), **CONFIG_SCHEMA}

    def eval_fn(self, kind, args, out):
        return _validation_error(kind)

    def test(self, kind, args, out, device, trainer):
        model, guide, _, state = self.load_model(Path(out) / BEST_CHECKPOINT, device=device, kind=kind)
        record, _ = evaluate_protein(model, guide, state, test_sets_of(state, args.data_root), out, args.mc_samples, args.seed, device)
        record["train_seconds"] = trainer.elapsed
        return record

    def evaluate(self, args, model, guide, state, device):
        """The protocol's test sets, every variant; a reliability diagram per test set next to the output."""
        output = evaluation_path(args)
        record, _ = evaluate_protein(model, guide, state, test_sets_of(state, args.data_root), output.parent, args.num_samples, args.seed, device)
        output.write_text(json.dumps(record, indent=2) + "\n")
        print(f"  written to {output}")
        return 0

    def sample(self, args, model, guide, state, device):
        raise ValueError(f"{state.get('kind')} is a classifier of given proteins: pyro-seq sample has nothing to draw (use pyro-seq evaluate)")
