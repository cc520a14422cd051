"""`gclreid search`: query images against an embedded gallery → top-k (JSON) and ranked-list pictures."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import List


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="find the nearest gallery images of query images (top-k JSON + ranked-list pictures)",
        description="Embed the query images with the checkpoint (as the gallery was: same preprocessing, the "
                    "gallery's flip setting unless --flip/--no-flip), find each query's K nearest entries of "
                    "the gallery file written by `gclreid embed`, and write OUT/results.json and one picture "
                    "per query (OUT/query_NNN_<name>.png: the query, then ranks 1..K with their distances). "
                    "Distance: squared Euclidean between L2-normalised features, 2 - 2·cos (0 = identical). "
                    "The gallery is scanned in chunks (no query × gallery matrix); --backend faiss for faiss. "
                    "See docs/inference.md.",
        epilog="examples:\n"
               "  gclreid search --checkpoint runs/gcl/last.pt --query person.jpg --gallery gallery.npz --top 10 "
               "--out found/\n"
               "  gclreid search --checkpoint last.pt --query q1.jpg q2.jpg queries/ --gallery g.npz --top 20 "
               "--out found/ --rerank",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="gclreid checkpoint; must hold the weights the gallery was embedded with")
    p.add_argument("--query", required=True, nargs="+", metavar="IMG",
                   help="query image(s); a folder stands for every image under it")
    p.add_argument("--gallery", required=True, metavar="FILE.npz", help="embeddings file written by `gclreid embed`")
    p.add_argument("--top", type=int, default=10, metavar="K", help="gallery entries per query (default 10)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (results.json + pictures)")
    p.add_argument("--rerank", action="store_true",
                   help="k-reciprocal re-ranking (Zhong et al. 2017; galleries up to 50,000 entries)")
    p.add_argument("--k1", type=int, default=20, help="re-ranking k1 (default 20)")
    p.add_argument("--k2", type=int, default=6, help="re-ranking k2 (default 6)")
    p.add_argument("--lambda-value", type=float, default=0.3, help="re-ranking λ (default 0.3)")
    p.add_argument("--backend", default="torch", choices=("torch", "faiss"),
                   help="top-k search: chunked matrix products (torch, default) or an exact faiss flat index "
                        "(needs faiss-cpu; slower on few CPU cores, see docs/inference.md)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip-average the queries (default: as the gallery was embedded)")
    p.add_argument("--pictures", action=argparse.BooleanOptionalAction, default=True,
                   help="draw a ranked-list picture per query (default on)")
    p.add_argument("--model-key", default=None, help="model inside the checkpoint (as for `gclreid embed`)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=64, help="query images per forward pass (default 64)")
    p.set_defaults(func=run)


def query_paths(items: List[str]) -> List[str]:
    from ..data import find_images
    from ..errors import DatasetError

    paths = []
    for item in items:
        if os.path.isdir(item):
            found = find_images(item, recursive=True)
            if not found:
                raise DatasetError(f"--query {item}: no image files under this folder")
            paths += [os.path.abspath(os.path.join(item, rel)) for rel in found]
        elif os.path.exists(item):
            paths.append(os.path.abspath(item))
        else:
            raise DatasetError(f"--query {item}: no such file or folder")
    return paths


def run(args: argparse.Namespace) -> int:
    from ..errors import GclreidError
    from ..evaluation.visual import RankedImage, save_ranked_list
    from ..inference import Encoder, load_embeddings, rerank_topk, topk_search

    if args.top < 1 or args.batch_size < 1:
        raise GclreidError(f"--top {args.top} / --batch-size {args.batch_size}: expected >= 1")
    queries = query_paths(args.query)
    gallery = load_embeddings(args.gallery)
    if len(gallery) == 0:
        raise GclreidError(f"gallery {args.gallery} holds no features")
    made = gallery.meta.get("preprocessing") or {}
    flip = args.flip if args.flip is not None else made.get("flip")
    encoder = Encoder.from_checkpoint(args.checkpoint, device=args.device, flip=flip, model_key=args.model_key)
    sha = gallery.meta.get("weights_sha256")
    if sha and sha != encoder.weights_sha256:
        raise GclreidError(f"gallery {args.gallery} was embedded with other weights ({gallery.meta.get('checkpoint')}, "
                           f"weights sha256 {sha[:12]}…) than {args.checkpoint} ({encoder.weights_sha256[:12]}…); "
                           "features of different models cannot be compared: embed the gallery with this checkpoint")
    for key in ("height", "width"):
        if key in made and int(made[key]) != getattr(encoder, key):
            raise GclreidError(f"gallery {args.gallery} was embedded at {key} {made[key]}, the checkpoint uses "
                               f"{getattr(encoder, key)}")
    qf = encoder.embed(queries, batch_size=args.batch_size, progress=len(queries) > args.batch_size)
    if qf.shape[1] != gallery.features.shape[1]:
        raise GclreidError(f"query features are {qf.shape[1]}-d but the gallery's are {gallery.features.shape[1]}-d")
    if args.rerank:
        dist, idx = rerank_topk(qf, gallery.features, args.top, k1=args.k1, k2=args.k2, lambda_value=args.lambda_value)
        metric = (f"k-reciprocal re-ranked distance (Zhong et al. 2017; k1 {args.k1}, k2 {args.k2}, "
                  f"lambda {args.lambda_value}): smaller is nearer")
    else:
        dist, idx = topk_search(qf, gallery.features, args.top, backend=args.backend)
        metric = "squared Euclidean between L2-normalised features = 2 - 2*cos (0 identical, 4 opposite)"

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for qi, qpath in enumerate(queries):
        ranked = [{"rank": r + 1, "path": str(gallery.paths[g]), "distance": float(dist[qi, r]), "index": int(g),
                   "pid": int(gallery.pids[g]), "camid": int(gallery.camids[g])} for r, g in enumerate(idx[qi])]
        entry = {"query": qpath, "results": ranked}
        if args.pictures:
            name = f"query_{qi:03d}_{Path(qpath).stem}.png"
            save_ranked_list(
                RankedImage(qpath, ["query"], "query"),
                [RankedImage(r["path"], [f"#{r['rank']}  d {r['distance']:.3f}",
                                         f"id {r['pid']} c{r['camid']}" if r["pid"] >= 0 else ""]) for r in ranked],
                out / name, title=f"{Path(qpath).name}: top {len(ranked)} of {len(gallery)}")
            entry["picture"] = name
        results.append(entry)
    report = {"checkpoint": encoder.checkpoint, "gallery": str(Path(args.gallery).resolve()),
              "gallery_size": len(gallery), "top": int(idx.shape[1]), "metric": metric, "rerank": bool(args.rerank),
              "flip": encoder.flip, "note": "pid/camid -1: unknown (not from a dataset reader)", "queries": results}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    for entry in results[:5]:
        best = entry["results"][0]
        print(f"{entry['query']}: 1. {best['path']} ({best['distance']:.4f})")
    if len(results) > 5:
        print(f"… {len(results) - 5} more queries")
    print(f"results written to {out / 'results.json'}" + (" with a picture per query" if args.pictures else ""))
    return 0
