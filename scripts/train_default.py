"""Train the shipped default model: an ensemble of AMNet heads on all LNSIM images.

    python scripts/train_default.py --trunk resnet152 --members 3 --prior kernel
    python scripts/train_default.py --trunk efficientnet_lite2 --members 3 --no-flip

Each member trains on all images (targets: scores.txt) minus its own validation tenth (a
different seeded tenth per member, used only for epoch selection), with the configuration
chosen by the lnsim25 cross-validation (configs/lnsim25-cpu.json), on the original and mirrored
views. A prior fitted on all images with its penalty chosen by leave-one-out is blended in
with weight ``--prior-mix``: ``--prior ridge`` (default weight 0.5, the lnsim25 `amnet+ridge`
recipe) a ridge prior on the pooled map, ``--prior kernel`` (default weight 0.8, the
`amnet+kernel` recipe) kernel ridge on the descriptor of ``amnet.model.prior``. With flips the
model is saved to be run with test-time flips (as cv measured it). The heads are saved
together, in float16, as src/amnet/pretrained/amnet-lnsim-<trunk>.safetensors."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from amnet.checkpoint import load_checkpoint, resolve_model, save_checkpoint
from amnet.fileio import sha256_file
from amnet.model.amnet import AMNetEnsemble
from amnet.model.head import AMNetConfig
from amnet.training.cache import FeatureStore
from amnet.training.cv import PRIOR_MIX, PRIOR_VIEWS
from amnet.training.data import DataConfig, read_split_file
from amnet.training.heads import TrainConfig
from amnet.training.jobs import TrainJob, run_train
from amnet.training.priors import KernelDescriptors, fit_prior
from amnet.trunks.registry import get_trunk_spec

ROOT = Path(__file__).resolve().parents[1]
LNSIM = ROOT.parent / "shared" / "datasets" / "lnsim"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trunk", default="resnet152")
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--config", default=str(ROOT / "configs" / "lnsim25-cpu.json"))
    ap.add_argument("--root", default=str(LNSIM))
    ap.add_argument("--work", default=str(ROOT / "runs" / "default"))
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--prior", choices=("ridge", "kernel"), default="ridge")
    ap.add_argument("--kernel", choices=("laplace", "rbf"), default="laplace",
                    help="the kernel prior's kernel (as amnet cv --kernel)")  # fmt: skip
    ap.add_argument(
        "--prior-views",
        "--kernel-views",
        default=",".join(PRIOR_VIEWS),
        help="views the kernel prior averages over (as amnet cv --prior-views)",
    )
    ap.add_argument("--extra-trunk", help="a second trunk described by the kernel prior "
                    "(as amnet cv --extra-trunk)")  # fmt: skip
    ap.add_argument("--extra-views", help="the views the second trunk sees (some of "
                    "--prior-views, orig among them; default: all of them)")  # fmt: skip
    ap.add_argument("--prior-mix", type=float, help="0: the AMNet heads alone (default: "
                    "PRIOR_MIX of amnet.training.cv for the prior's cv variant)")  # fmt: skip
    ap.add_argument("--cv-results", help="results.csv of the lnsim25 run, for the model card")
    ap.add_argument("--view-space", choices=("image", "features"), default="image",
                    help="make the test-time views of the image (a trunk pass each) or of the "
                    "trunk's map (one pass)")  # fmt: skip
    ap.add_argument("--base", choices=("resmem",), help="the kernel prior fits the residual "
                    "over this model's rescaled score (needs --view-space features unless "
                    "--base-use teacher)")  # fmt: skip
    ap.add_argument("--base-scale", choices=("regression", "moments"), default="regression",
                    help="how the base's scores are rescaled onto LNSIM's")  # fmt: skip
    ap.add_argument(
        "--distil",
        metavar="DIR",
        help="unlabelled photos whose targets are the "
        "base's rescaled scores (knowledge distillation into the kernel prior)",
    )
    ap.add_argument(
        "--distil-every",
        type=int,
        default=1,
        metavar="K",
        help="use every K-th photo of --distil (sorted paths)",
    )
    ap.add_argument("--base-use", choices=("residual", "block", "teacher"), default="residual",
                    help="the base's score: what the kernel ridge's residual adds to, one more "
                    "descriptor column, or only the teacher of --distil")  # fmt: skip
    ap.add_argument("--distil-start", type=int, default=0, metavar="I",
                    help="start at the I-th photo of --distil (with --distil-every)")  # fmt: skip
    ap.add_argument("--distil-weight", default="1", metavar="W[,W...]",
                    help="each distilled photo's weight against a human-scored one; several: "
                    "the one with the best leave-one-out rho on human-scored photos")  # fmt: skip
    ap.add_argument("--support", choices=("float16", "int8"), default="float16",
                    help="how the kernel prior's support vectors are stored (int8: half the "
                    "file)")  # fmt: skip
    ap.add_argument("--name", help="the checkpoint's name (default: amnet-lnsim-TRUNK)")
    ap.add_argument(
        "--heads-from",
        metavar="MODEL",
        help="take the AMNet heads of this model "
        "(registry name or file) instead of training them: same data, same recipe",
    )
    args = ap.parse_args()
    if args.prior_mix is None:
        args.prior_mix = PRIOR_MIX[f"amnet+{args.prior}"]
    cfg = json.loads(Path(args.config).read_text())
    model = AMNetConfig.from_dict(
        {**cfg["model"], "in_channels": get_trunk_spec(args.trunk).channels}
    )
    heads, val_rhos = [], []
    t0 = time.time()
    if args.heads_from:
        given, meta = load_checkpoint(resolve_model(args.heads_from))
        heads, val_rhos = list(given.heads), meta["metrics"]["member_val_rho"]
    for m in range(0 if args.heads_from else args.members):
        data = DataConfig("list", args.root, file=str(Path(args.root) / "scores.txt"), seed=m)
        job = TrainJob(
            data=data,
            out=f"{args.work}/{args.trunk}/member{m}",
            trunk=args.trunk,
            model=model,
            train=TrainConfig(**{**cfg["train"], "seed": m}),
            flip=not args.no_flip,
            resume=True,
        )
        res = run_train(job)
        heads.append(res.head)
        val_rhos.append(res.best_rho)
    metrics = {"member_val_rho": val_rhos}
    prior = None
    if args.prior_mix:
        root = Path(args.root)
        records = read_split_file(root / "scores.txt", root / "images")  # every image
        flip = not args.no_flip and args.view_space == "image"  # views of the map: orig only
        store = FeatureStore(args.trunk, sorted({r.path for r in records}), flip=flip)
        data = store.featureset(records)
        if args.prior == "ridge":
            prior, loo_rho = fit_prior(data)
        else:
            views = tuple(args.prior_views.split(",")) if not args.no_flip else ("orig",)
            extra_views = tuple(args.extra_views.split(",")) if args.extra_views else None
            paths = [os.fspath(r.path) for r in records if os.fspath(r.path) in store.index]
            distil = []
            if args.distil:
                found = sorted(str(p) for p in Path(args.distil).rglob("*")
                               if p.suffix.lower() in (".jpg", ".jpeg", ".png"))  # fmt: skip
                distil = found[args.distil_start :: args.distil_every]
            kernel = KernelDescriptors(args.trunk, paths + distil, views, kernel=args.kernel,
                                       extra_trunk=args.extra_trunk, have=store,
                                       space=args.view_space, base=args.base,
                                       extra_views=extra_views)  # fmt: skip
            teacher = (distil, kernel.r[kernel.rows(distil)]) if distil else None
            fit = {"scale": args.base_scale, "distil": teacher, "use": args.base_use}
            weights = tuple(float(w) for w in args.distil_weight.split(","))
            if distil and weights != (1.0,):
                prior, loo_rho, weight = kernel.fit_weighted(paths, data.targets, weights, **fit)
                metrics["distil_weight"] = weight
            else:
                prior, loo_rho = kernel.fit(paths, data.targets, **(fit if args.base else {}))
        metrics["prior_loo_rho"] = round(loo_rho, 4)
    if args.cv_results:
        import csv

        from amnet.training.cv import summarise

        rows = list(csv.DictReader(open(args.cv_results)))
        s = summarise(rows).get("amnet")
        if s:
            metrics["lnsim25_rho_mean_single_head"] = round(float(s["rho_mean"]), 4)
            metrics["lnsim25_rho_std_single_head"] = round(float(s["rho_std"]), 4)
            metrics["lnsim25_mse_mean_single_head"] = round(float(s["mse_mean"]), 5)
    name = args.name or f"amnet-lnsim-{args.trunk}"
    out = ROOT / "src" / "amnet" / "pretrained" / f"{name}.safetensors"
    training = {
        "data": "LNSIM (Lu et al., TIP 2020), 2,000 images, targets scores.txt",
        "members": len(heads),
        **({"heads_from": args.heads_from} if args.heads_from else {}),
        "config": cfg,
        "flip_augmentation": not args.no_flip,
        "prior": args.prior if args.prior_mix else None,
        "kernel": args.kernel if args.prior_mix and args.prior == "kernel" else None,
        "extra_trunk": args.extra_trunk,
        **({"extra_views": args.extra_views} if args.extra_views else {}),
        "kernel_views": args.prior_views if args.prior == "kernel" else None,
        "prior_mix": args.prior_mix,
        **(
            {
                "view_space": args.view_space,
                "base": args.base,
                "base_scale": args.base_scale,
                "base_use": args.base_use,
                "distil": args.distil
                and f"{Path(args.distil).name}, every {args.distil_every} from {args.distil_start}",
                **({"distil_weights": args.distil_weight} if args.distil_weight != "1" else {}),
            }
            if args.view_space != "image" or args.base
            else {}
        ),
        "script": "scripts/train_default.py",
    }
    save_checkpoint(
        out,
        AMNetEnsemble(heads, prior, args.prior_mix if prior else 0.0, args.view_space),
        trunk=args.trunk,
        training=training,
        metrics=metrics,
        half=True,
        views=not args.no_flip,
        support=args.support,
    )
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB) sha256 {sha256_file(out)}")
    print(f"member validation rho: {[round(r, 3) for r in val_rhos]}; {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
