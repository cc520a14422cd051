"""Using a trained model: images → features (:class:`Encoder`), embedding files (``gclreid embed``),
nearest-neighbour search over a gallery (``gclreid search``), deployable ONNX / TorchScript files
(``gclreid export``). See docs/inference.md.

    from gclreid.inference import Encoder, load_embeddings, topk_search
    encoder = Encoder.from_checkpoint("runs/gcl/last.pt")
    gallery = load_embeddings("gallery.npz")
    distances, indices = topk_search(encoder.embed(["query.jpg"]), gallery.features, k=10)
"""
from .encoder import Encoder, InputError
from .export import (ExportCheckError, ExportDependencyError, ExportedModel, ExportError, ExportResult, export_encoder,
                     read_export_metadata)
from .progress import Progress
from .search import DEFAULT_CHUNK_BYTES, RERANK_MAX_GALLERY, rerank_topk, topk_search
from .store import EMBEDDINGS_FORMAT, Embeddings, EmbeddingsError, load_embeddings, save_embeddings

__all__ = ["Encoder", "InputError", "Progress", "topk_search", "rerank_topk",
           "RERANK_MAX_GALLERY", "DEFAULT_CHUNK_BYTES", "Embeddings", "EmbeddingsError", "load_embeddings",
           "save_embeddings", "EMBEDDINGS_FORMAT", "export_encoder", "ExportedModel", "ExportResult",
           "read_export_metadata", "ExportError", "ExportDependencyError", "ExportCheckError"]
