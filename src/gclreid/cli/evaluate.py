"""`gclreid evaluate`: rank a dataset's gallery for its queries with a trained (or untrained) encoder."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import save_config, validate_config
from .common import add_config_arguments, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate an identity (or DG-Net appearance) encoder on a query/gallery split (mAP, CMC, mINP)",
        description="Extract features for query and gallery, rank, and report mAP, CMC and mINP with the "
                    "standard protocol (same-identity same-camera gallery entries excluded). Without "
                    "--checkpoint the encoder is built from the config (ImageNet weights if "
                    "model.pretrained=true, else random).",
        epilog="examples:\n  gclreid evaluate --checkpoint runs/gcl/last.pt --dataset market1501 --root data/market\n"
               "  gclreid evaluate --dataset synthreid --root data/synth model.pretrained=false eval.flip=true\n"
               "  gclreid evaluate --checkpoint last.pt --dataset market1501 --root data eval.rerank=true\n"
               "  gclreid evaluate --checkpoint runs/dgnet/last.pt --dataset market1501 --root data dgnet.test_feature=prim\n"
               "  gclreid evaluate --checkpoint last.pt --dataset market1501 --root data --visualize 20   # + ranked/*.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", metavar="FILE", help="gclreid checkpoint holding the encoder")
    p.add_argument("--model-key", default=None,
                   help="name of the model inside the checkpoint (default: identity_encoder, or appearance_encoder "
                        "for a DG-Net checkpoint, evaluated with DG-Net's test feature: dgnet.test_feature, dgnet.beta)")
    p.add_argument("--dataset", metavar="NAME", help="dataset name (sets data.name)")
    p.add_argument("--root", metavar="DIR", help="dataset root (sets data.root)")
    p.add_argument("--out", metavar="DIR", help="folder for evaluate.json and config.yaml "
                                                "(default: the checkpoint's folder, else run.out)")
    p.add_argument("--visualize", type=int, default=0, metavar="N",
                   help="also draw N queries (spread evenly over the query list) with their top-k gallery images "
                        "into OUT/ranked/ (one PNG each + index.json): true matches framed green, other identities "
                        "red, junk (same identity and camera, ignored by the protocol) grey")
    p.add_argument("--visualize-top", type=int, default=10, metavar="K",
                   help="gallery images per picture with --visualize (default 10)")
    add_config_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import dataset_from_config
    from ..errors import GclreidError
    from ..evaluation.pipeline import encoder_from_checkpoint, evaluate_model
    from ..models import build_identity_encoder
    from ..runtime import resolve_device, seed_everything

    if args.visualize < 0 or args.visualize_top < 1:
        raise GclreidError(f"--visualize {args.visualize} / --visualize-top {args.visualize_top}: expected "
                           "N >= 0 and K >= 1")
    shortcuts = [f"data.name={args.dataset}"] if args.dataset else []
    shortcuts += [f"data.root={args.root}"] if args.root else []
    cfg = config_from_args(args, shortcuts)
    seed_everything(cfg.run.seed)  # before building: an untrained encoder's random weights are seeded
    if args.checkpoint:
        model, cfg, _ = encoder_from_checkpoint(args.checkpoint, cfg, args.model_key, args.overrides)
    else:
        model = build_identity_encoder(cfg.model)
    validate_config(cfg, evaluation_only=True)  # eval.*, image size, device: refused before any work
    device = resolve_device(cfg.run.device)
    # Always the released query/gallery (test split): a checkpoint's data.val_identities (the validation
    # split used during its training) is ignored here (for_training=False).
    dataset = dataset_from_config(cfg.data, for_training=False)
    model.to(device)

    result = evaluate_model(model, dataset, cfg.data, cfg.eval, device, progress=True,
                            return_details=bool(args.visualize))
    if args.visualize:
        result, details = result
    out = Path(args.out) if args.out else (Path(args.checkpoint).parent if args.checkpoint else Path(cfg.run.out))
    out.mkdir(parents=True, exist_ok=True)
    report = {"dataset": cfg.data.name, "root": str(cfg.data.root), "checkpoint": args.checkpoint,
              "eval_split": "test",
              **{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in result.items()}}
    if args.visualize:
        from ..evaluation.visual import save_ranked_queries
        ranked = save_ranked_queries(details["distmat"], details["query_records"], details["gallery_records"],
                                     out / "ranked", args.visualize, top=args.visualize_top)
        report["visualize"] = {"folder": str(out / "ranked"), "queries": len(ranked),
                               "top": min(args.visualize_top, len(details["gallery_records"]))}
    (out / "evaluate.json").write_text(json.dumps(report, indent=2))
    save_config(cfg, out / "evaluate_config.yaml")
    print(format_table(result, title=f"{cfg.data.name} ({cfg.data.root})"))
    print(f"results written to {out / 'evaluate.json'}")
    if args.visualize:
        print(f"ranked lists of {report['visualize']['queries']} queries written to {out / 'ranked'}")
    return 0


def format_table(result, title: str = "") -> str:
    """A small text table: mAP, rank-1/5/10, mINP in percent, and the query counts."""
    cmc = result["cmc"]
    ranks = [r for r in (1, 5, 10, 20) if r <= len(cmc)]
    head = ["mAP"] + [f"R-{r}" for r in ranks] + ["mINP"]
    vals = [result["mAP"]] + [cmc[r - 1] for r in ranks] + [result["mINP"]]
    lines = [title] if title else []
    lines.append("  ".join(f"{h:>6}" for h in head))
    lines.append("  ".join(f"{100 * float(v):6.2f}" for v in vals))
    lines.append(f"queries: {result['num_valid_queries']} evaluated, {result['num_skipped_queries']} skipped "
                 "(no valid match in the gallery)")
    return "\n".join(lines)
