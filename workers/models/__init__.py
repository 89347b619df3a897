"""Image-embedding backends behind one interface (`ImageEmbedder`), chosen by settings."""

from workers.models.base import ImageEmbedder, ModelUnavailable, load_embedder

__all__ = ["ImageEmbedder", "ModelUnavailable", "load_embedder"]
