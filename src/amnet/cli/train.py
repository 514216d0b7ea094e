"""Research subcommands of ``amnet``: cache, train, evaluate, cv. Dispatch only: each builds
a config and calls one library function."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from amnet.cli.config_args import add_config_args, config_changes, read_config

EXAMPLES_TRAIN = """examples:
  amnet train --data isola --root ../shared/datasets/lnsim --split 0 --out runs/lnsim0
  amnet train --data list --root ../shared/datasets/lnsim \\
      --file ../shared/datasets/lnsim/scores.txt --out runs/all --epochs 20
  amnet train --config my.json --resume         # continue a killed run
  amnet train --data isola --root ../shared/datasets/lnsim --out runs/crops --crops 4
"""
EXAMPLES_CV = """examples:
  amnet cv --protocol lnsim25 --root ../shared/datasets/lnsim --out runs/cv
  amnet cv --protocol lamem5 --root ~/data/lamem --splits 0,1 --variants amnet,ridge --out cv
"""
CROPS_HELP = (
    "also cache N crop views (0-10: 7/8 of each side at the corners and centre, then "
    "mirrored) for training; never used when predicting (default 0)"
)


def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        choices=["lamem", "sun", "isola", "list", "csv"],
        required=required,
        help="dataset layout (see `amnet.training.data`)",
    )
    g.add_argument("--root", help="dataset folder (holding images/ and splits/ or the .mat files)")
    g.add_argument(
        "--split",
        type=int,
        default=None,
        help="split number: from 1 for lamem/sun files, row from 0 for isola",
    )
    g.add_argument("--file", help="list or csv file for --data list/csv")
    g.add_argument("--path-column", default="path")
    g.add_argument("--score-column", default="score")
    g.add_argument(
        "--score-scale",
        type=float,
        default=None,
        help="divide scores by this (e.g. 100 for percentages)",
    )
    g.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="validation share carved from training data when there is no val split",
    )


def _data_config(args: argparse.Namespace, base=None):
    from amnet.training.data import DataConfig

    if args.data is None:
        if base is None:
            raise ValueError("--data is required (or a --config that has one)")
        return base
    if not args.root:
        raise ValueError("--root is required with --data")
    split = args.split if args.split is not None else (0 if args.data == "isola" else 1)
    return DataConfig(
        args.data,
        args.root,
        split=split,
        file=args.file,
        path_column=args.path_column,
        score_column=args.score_column,
        score_scale=args.score_scale,
        val_fraction=args.val_fraction,
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from amnet.model.head import AMNetConfig
    from amnet.training.heads import TrainConfig

    g = p.add_argument_group("model (AMNetConfig; overrides --config)")
    g.add_argument("--trunk", default=None, help="frozen trunk (default resnet152)")
    add_config_args(g, AMNetConfig, "model", skip=("in_channels",))
    g = p.add_argument_group("training (TrainConfig; overrides --config)")
    add_config_args(g, TrainConfig, "train")
    g.add_argument("--no-flip", action="store_true",
                   help="no mirrored view at all: not cached, not for augmentation, not as a "
                   "test-time view")  # fmt: skip
    g.add_argument("--crops", type=int, metavar="N", help=CROPS_HELP)


def _model_train_configs(args, config: dict, model=None, train=None):
    """AMNetConfig and TrainConfig: defaults (or ``model``, ``train``), then the --config
    file's sections, then the flags."""
    from amnet.model.head import AMNetConfig
    from amnet.training.heads import TrainConfig

    model = model or AMNetConfig.from_dict(config.get("model", {}))
    train = train or TrainConfig.from_dict(config.get("train", {}))
    m, t = config_changes(args, "model"), config_changes(args, "train")
    if args.no_flip:
        t.update(augment_flip=False, views=False)
    return dataclasses.replace(model, **m), dataclasses.replace(train, **t)


def _cache(sub) -> None:
    p = sub.add_parser(
        "cache",
        help="build the trunk feature cache for a dataset",
        description="Run the frozen trunk once per image (and mirrored and crop view) "
        "and store the feature maps; training reuses them.",
    )
    _add_data_args(p)
    p.add_argument("--trunk", default="resnet152")
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--crops", type=int, default=0, metavar="N", help=CROPS_HELP)
    p.add_argument("--cache-root", help="cache folder (default: $AMNET_HOME/features)")

    def run(args) -> int:
        from amnet.training.cache import FeatureStore
        from amnet.training.data import load_records

        cfg = _data_config(args)
        parts = ("train", "val") if cfg.kind in ("list", "csv") else ("train", "val", "test")
        paths = sorted({r.path for part in parts for r in load_records(cfg, part)})
        store = FeatureStore(
            args.trunk,
            paths,
            flip=not args.no_flip,
            crops=args.crops,
            root=args.cache_root,
            log=lambda m: print(m, file=sys.stderr),
        )
        for path, err in store.errors.items():
            print(f"{path}: {err}", file=sys.stderr)
        print(f"{len(paths) - len(store.errors)} images cached in {store.seconds_building:.0f}s")
        return 1 if store.errors else 0

    p.set_defaults(func=run)


def _train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train an AMNet head on scored images",
        epilog=EXAMPLES_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_args(p, required=False)
    _add_model_args(p)
    p.add_argument(
        "--config",
        help="JSON with 'model' and 'train' sections (as amnet cv), "
        "or a whole job as written to OUT/config.json",
    )
    p.add_argument("--out", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.state")
    p.add_argument("--no-cache", action="store_true", help="compute features without the cache")
    p.add_argument("--cache-root")
    p.add_argument("--half", action="store_true", help="save the checkpoint in float16")

    def run(args) -> int:
        from amnet.training.jobs import TrainJob, run_train

        config = read_config(args.config)
        if "data" in config:  # a whole job, as written to OUT/config.json
            job = TrainJob.from_dict({"out": args.out, **config})
            model, train = _model_train_configs(args, config, job.model, job.train)
        else:  # the sections amnet cv takes too: data and out from the flags
            if not args.out and not config.get("out"):
                raise ValueError("--out is required (or a --config that has one)")
            job = TrainJob(data=_data_config(args), out=args.out or config["out"])
            model, train = _model_train_configs(args, config)
        changes = {
            "data": _data_config(args, job.data),
            "model": model,
            "train": train,
            "resume": args.resume or job.resume,
        }
        for k in ("out", "trunk", "cache_root"):
            if getattr(args, k, None):
                changes[k] = getattr(args, k)
        if args.no_cache:
            changes["cache"] = False
        if args.no_flip:
            changes["flip"] = False
        if args.crops is not None:
            changes["crops"] = args.crops
        if args.half:
            changes["half"] = True
        run_train(dataclasses.replace(job, **changes))
        return 0

    p.set_defaults(func=run)


def _evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="Spearman rho and MSE of a model on a dataset split")
    _add_data_args(p)
    p.add_argument("--model", default="default", help="registry name or checkpoint file")
    p.add_argument("--part", default="test", choices=["train", "val", "test"])
    p.add_argument("--out", help="folder for predictions.csv, metrics.json, scatter.png")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")

    def run(args) -> int:
        from amnet.training.jobs import EvalJob, run_evaluate

        r = run_evaluate(
            EvalJob(
                args.model,
                _data_config(args),
                args.part,
                args.out,
                args.batch_size,
                args.workers,
                args.device,
            )
        )
        print(
            f"n = {r['n']} ({r['failed']} failed)   Spearman rho = {r['rho']:.4f} "
            f"(AMNet's tie-unaware formula: {r['rho_amnet_formula']:.4f})   "
            f"MSE = {r['mse']:.5f}   predictions in [{r['pred_min']:.3f}, {r['pred_max']:.3f}]"
        )
        return 0

    p.set_defaults(func=run)


def _cv(sub) -> None:
    from amnet.training.cv import PRIOR_VIEWS, VARIANTS

    p = sub.add_parser(
        "cv",
        help="cross-validate: lamem5, sun25 or lnsim25 with ablations",
        epilog=EXAMPLES_CV,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--protocol", required=True, choices=["lamem5", "sun25", "lnsim25"])
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--splits", help="comma-separated split indices from 0 (default: all)")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated, from: " + ", ".join(VARIANTS),
    )
    p.add_argument("--config", help="JSON with 'model' and 'train' sections (as amnet train)")
    p.add_argument("--cache-root")
    p.add_argument("--kernel", choices=["laplace", "rbf"], default="laplace",
                   help="the kernel prior's kernel (variants kernel, amnet+kernel)")  # fmt: skip
    p.add_argument(
        "--prior-views",
        "--kernel-views",
        default=",".join(PRIOR_VIEWS),
        help="views the kernel prior averages over (default: %(default)s)",
    )
    p.add_argument("--extra-trunk", metavar="TRUNK",
                   help="a second trunk whose descriptor the kernel prior appends "
                   "(e.g. efficientnet_lite2)")  # fmt: skip
    _add_model_args(p)

    def run(args) -> int:
        from amnet.training.cv import CVConfig, run_cv, summarise

        model, train = _model_train_configs(args, read_config(args.config))
        trunk = args.trunk or "resnet152"
        from amnet.trunks.registry import get_trunk_spec

        model = dataclasses.replace(model, in_channels=get_trunk_spec(trunk).channels)
        splits = tuple(int(s) for s in args.splits.split(",")) if args.splits else None
        cfg = CVConfig(
            args.protocol,
            args.root,
            args.out,
            splits=splits,
            trunk=trunk,
            variants=tuple(v for v in args.variants.split(",") if v),
            model=model,
            train=train,
            flip=not args.no_flip,
            crops=args.crops or 0,
            cache_root=args.cache_root,
            kernel=args.kernel,
            extra_trunk=args.extra_trunk,
            prior_views=tuple(v for v in args.prior_views.split(",") if v),
        )
        rows = run_cv(cfg)
        for name, s in summarise(rows).items():
            print(
                f"{name:14s} rho {s['rho_mean']:.3f} ± {s['rho_std']:.3f}   "
                f"MSE {s['mse_mean']:.4f} ± {s['mse_std']:.4f}   ({s['n']} splits)"
            )
        print(f"results: {args.out}/results.csv and results.md")
        return 0

    p.set_defaults(func=run)


SUBCOMMANDS = [_cache, _train, _evaluate, _cv]
