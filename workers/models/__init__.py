"""Image-embedding backends behind one interface (`ImageEmbedder`), chosen by settings."""

from workers.models.base import ImageEmbedder, ModelUnavailable
from workers.models.loading import load_embedder

__all__ = ["ImageEmbedder", "ModelUnavailable", "load_embedder"]
