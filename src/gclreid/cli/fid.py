"""`gclreid fid`: Fréchet Inception Distance between a folder of real and a folder of generated images."""
from __future__ import annotations

import argparse
import json
import sys


# Copies of gclreid.evaluation.fid's constants (tests check they agree), so that building the parser
# for `gclreid --help` does not import torch.
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
FID_DIMS = (64, 192, 768, 2048)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fid", help="FID between a folder of real and a folder of generated images (FID Inception-v3 or ReID features)",
        description="Fréchet Inception Distance between the images directly in REAL_DIR and FAKE_DIR (jpg/png/…, "
                    "not subfolders), with the Inception-v3 network of the standard FID (TTUR / pytorch-fid): "
                    "images resized bilinearly to 299x299, 2048-d pool3 features, "
                    "||mu1-mu2||² + Tr(S1 + S2 - 2 sqrtm(S1 S2)). It needs the FID weights file "
                    f"{FID_WEIGHTS_FILE} (--inception-weights; else looked for in the torch hub cache); nothing is "
                    f"downloaded: get it from {FID_WEIGHTS_URL}. --reid-checkpoint instead measures FID on the "
                    "embedding of a gclreid ReID encoder: NOT comparable with published FID numbers, only between "
                    "runs measured with the same checkpoint.",
        epilog="examples:\n"
               f"  gclreid fid data/market/bounding_box_train runs/dgnet/generated --inception-weights {FID_WEIGHTS_FILE}\n"
               "  gclreid fid real/ fake/ --inception-weights ~/weights/ --device cuda --batch-size 100 --json\n"
               "  gclreid fid real/ fake/ --reid-checkpoint runs/gcl/last.pt   # FID on ReID features (not comparable)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("real_dir", metavar="REAL_DIR", help="folder of real images")
    p.add_argument("fake_dir", metavar="FAKE_DIR", help="folder of generated images")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--inception-weights", metavar="PATH",
                       help=f"the FID weights file {FID_WEIGHTS_FILE}, or a folder holding it (default: the torch "
                            "hub cache, $TORCH_HOME/hub/checkpoints)")
    which.add_argument("--reid-checkpoint", metavar="CKPT",
                       help="use the embedding of this gclreid checkpoint's ReID encoder instead of Inception-v3 "
                            "(FID on ReID features: not comparable with published FID numbers)")
    p.add_argument("--model-key", default=None,
                   help="with --reid-checkpoint: the model inside the checkpoint (default: identity_encoder, or "
                        "appearance_encoder for a DG-Net checkpoint)")
    p.add_argument("--dims", type=int, default=2048, choices=FID_DIMS,
                   help="Inception feature size: 2048 (pool3, the standard FID; default) or the 64/192/768-d block "
                        "outputs, as pytorch-fid's --dims")
    p.add_argument("--batch-size", type=int, default=50, help="images per forward pass (default 50)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--workers", type=int, default=2, help="image-loading worker processes (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import GclreidError
    from ..evaluation.fid import fid_from_folders, load_fid_inception, load_reid_features
    from ..runtime import resolve_device

    if args.batch_size < 1:
        raise GclreidError(f"--batch-size {args.batch_size}: expected >= 1")
    if args.workers < 0:
        raise GclreidError(f"--workers {args.workers}: expected >= 0")
    if args.reid_checkpoint and args.dims != 2048:
        raise GclreidError("--dims selects an Inception block; it does not apply to --reid-checkpoint")
    if args.model_key and not args.reid_checkpoint:
        raise GclreidError("--model-key only applies with --reid-checkpoint")
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as exc:
        raise GclreidError(f"--device {args.device}: {exc}") from None
    if args.reid_checkpoint:
        extractor = load_reid_features(args.reid_checkpoint, args.model_key)
    else:
        extractor = load_fid_inception(args.inception_weights, dims=args.dims)
    result = fid_from_folders(args.real_dir, args.fake_dir, extractor, batch_size=args.batch_size, device=device,
                              workers=args.workers, progress=True)
    if not result["comparable_with_published"]:
        result["note"] = "FID on ReID features: not comparable with published FID numbers"
    elif result["feature_dim"] != 2048:
        result["note"] = f"{result['feature_dim']}-d Inception features: not comparable with the standard 2048-d FID"
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"FID {result['fid']:.4f}")
    print(f"  real: {result['real']} ({result['num_real']} images)")
    print(f"  fake: {result['fake']} ({result['num_fake']} images)")
    print(f"  features: {result['feature']}, {result['feature_dim']}-d")
    if "note" in result:
        print(f"  note: {result['note']}")
    return 0
