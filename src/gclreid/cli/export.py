"""`gclreid export`: a checkpoint's identity encoder → ONNX (dynamic batch) or TorchScript, parity-checked."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint's encoder to ONNX or TorchScript (parity-checked, preprocessing in metadata)",
        description="Export the ReID encoder of a gclreid checkpoint (any method and backbone; DG-Net's appearance "
                    "encoder with its test feature) as a model mapping an ImageNet-normalised float32 batch "
                    "`images` (B×3×H×W, RGB, any B) to L2-normalised `embeddings` (B×D) — what `gclreid embed` "
                    "computes, flip averaging inside the graph when on. The preprocessing (size, mean, std, "
                    "colour order, output dim, source checkpoint, method, arch) is written into the file: ONNX "
                    "metadata_props['preprocessing'], TorchScript extra file preprocessing.json. Unless --no-check, "
                    "the file is loaded back (onnxruntime on CPU / torch.jit) and run at batch 1 and 4 on --images "
                    "or seeded random images: embeddings must match the checkpoint's to 1e-4 and differ between "
                    "images; a file that fails is not written. See docs/inference.md.",
        epilog="examples:\n"
               "  gclreid export --checkpoint runs/gcl/last.pt --format onnx --out reid.onnx\n"
               "  gclreid export --checkpoint runs/gcl/last.pt --format torchscript --out reid.pt --images crops/\n"
               "  gclreid export --checkpoint last.pt --format onnx --out reid.onnx --opset 18 --no-flip",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="gclreid checkpoint holding the encoder")
    p.add_argument("--format", required=True, metavar="onnx|torchscript", help="onnx or torchscript")
    p.add_argument("--out", required=True, metavar="FILE", help="output file (written only once it passes the check)")
    p.add_argument("--height", type=int, default=None, help="input height (default the checkpoint's data.height)")
    p.add_argument("--width", type=int, default=None, help="input width (default the checkpoint's data.width)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch's exporter's, 18+)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average each image's embedding with its mirror's inside the graph (default: the "
                        "checkpoint's eval.flip); --no-flip halves the cost")
    p.add_argument("--images", metavar="DIR", default=None,
                   help="real images for the parity check (up to 16, spread evenly over DIR); default: 8 seeded "
                        "random images")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="write the file without loading it back and comparing it with the checkpoint")
    p.add_argument("--model-key", default=None,
                   help="model inside the checkpoint (default identity_encoder, or appearance_encoder for DG-Net)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.export import export_encoder

    result = export_encoder(args.checkpoint, args.out, args.format, height=args.height, width=args.width,
                            flip=args.flip, opset=args.opset, check=args.check, images=args.images,
                            model_key=args.model_key)
    m = result.metadata
    extra = f", opset {m['opset']}" if "opset" in m else ""
    print(f"exported the {m['method'] or '?'} {m['arch']} encoder of {m['checkpoint']} ({m['output_dim']}-d, input "
          f"B×3×{m['height']}×{m['width']}, flip {'on (in the graph)' if m['flip'] else 'off'}{extra}) → "
          f"{result.path} ({result.size_bytes / 1e6:.1f} MB, {result.format})")
    check = result.check
    if check.get("checked"):
        diffs = ", ".join(f"{d:.2g} at batch {bs}" for bs, d in check["max_abs_diff"].items())
        print(f"parity check passed ({check['runtime']}, {check['inputs']}): max |exported − checkpoint| {diffs} "
              f"(≤ {check['tolerance']:g}); different images differ (min distance {check['min_pair_distance']:.3g})")
    else:
        print(f"parity check skipped: {check.get('skipped', 'not run')}")
    return 0
