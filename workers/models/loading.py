"""Which backend a process loads, and how a missing model is said: the one factory for every model.

Apart from `base` (the interface) and `copy` (the copy descriptor's input and batching) so that neither
imports the backends that import them: the backends depend on those two, this module on the backends.
"""

from __future__ import annotations

import logging
from typing import Any

from workers.models.base import ImageEmbedder, ModelUnavailable, is_checkpoint_path, set_threads
from workers.models.copy import CopyDescriptor, copy_identity, resolve_path
from workers.settings import CopyModelSettings, ModelSettings, WorkerSettings

log = logging.getLogger(__name__)

def load_embedder(settings: ModelSettings) -> ImageEmbedder:
    """Load the configured backend once per process (workers keep it for their whole life)."""
    if settings.backend == "onnx":
        from workers.models.onnx import OnnxEmbedder

        return OnnxEmbedder(settings)
    from workers.models.openclip import OpenClipEmbedder

    return OpenClipEmbedder(settings)


def refuse_unreachable_tag(settings: ModelSettings) -> None:
    """Raise ModelUnavailable, before torch is imported, when open_clip would certainly fail to get a
    pretrained tag's weights: the hub is not used and no weight cache holds a single file.

    open_clip finds that out only after importing torch and building the model with random weights (about
    900 MB peak RSS and 7 CPU-s for ViT-B-32 on 2 cores), which an offline host running SSCD alone paid
    at every start for nothing. Any cached file at all, a local checkpoint path, or a schema name
    ('hf-hub:', 'local-dir:') leaves the decision to open_clip, so whatever loads still loads.
    """
    from workers.models.hub import CANNOT_FETCH_FIX, cannot_fetch, holds_any_file, offline_reason, weights_cache_dirs

    if settings.backend != "open_clip" or ":" in settings.name or is_checkpoint_path(settings.pretrained):
        return
    offline = offline_reason()
    if offline and not holds_any_file(weights_cache_dirs(settings.cache_dir)):
        raise ModelUnavailable(cannot_fetch(settings.name, settings.pretrained, offline), CANNOT_FETCH_FIX)


def load_model(settings: WorkerSettings) -> tuple[ImageEmbedder | None, dict[str, str]]:
    """The semantic model a process will use, or None, with a status record for `status`/readyz.

    Switched off by choice (`hash_only`, model.name = "none") is quiet. Missing weights are loud: no
    `similar` verdicts, said with the setting that fixes it, and a hard error with `require_model`.
    """
    if settings.hash_only:
        return None, {"state": "hash-only", "reason": "hash_only is set", "model": ""}
    if settings.model.name == "none":
        return None, {"state": "off", "reason": "model.name is none", "model": ""}
    try:
        refuse_unreachable_tag(settings.model)
        set_threads(settings.model.threads)
        embedder = load_embedder(settings.model)
    except ModelUnavailable as exc:
        if settings.require_model:
            raise
        log.error("=" * 72)
        log.error("SEMANTIC MODEL UNAVAILABLE: no 'similar' verdicts (copies are still found)")
        log.error("reason: %s", exc)
        log.error("fix: %s (or set require_model to make this fatal)", exc.fix)
        log.error("=" * 72)
        return None, {"state": "unavailable", "reason": str(exc), "fix": exc.fix, "model": settings.model.name}
    return embedder, {"state": "loaded", "model": embedder.identity, "device": str(embedder.device),
                      "dim": str(embedder.dim)}


def load_models(settings) -> tuple[ImageEmbedder | None, Any, dict[str, str]]:
    """Both models of a process (semantic, copy descriptor), each possibly None, and one status record."""
    copier, copy_status = load_copy_model(settings)
    embedder, status = load_model(settings)
    return embedder, copier, {**status, **copy_status}

def load_copy_model(settings) -> tuple[CopyDescriptor | None, dict[str, str]]:
    """The copy descriptor a process will use, or None, with its status record for `status` and /readyz.

    Switched off (hash_only, or copy_model.name = "none") is quiet. Missing is loud, names the fix, and is
    fatal with `require_model`: without it crops, overlays and rotations fall back to the hash rules.
    """
    cfg: CopyModelSettings = settings.copy_model
    if settings.hash_only or cfg.name == "none":
        reason = "hash_only is set" if settings.hash_only else "copy_model.name is none"
        return None, {"copy_state": "off", "copy_reason": reason, "copy_model": ""}
    try:
        path = resolve_path(cfg.name)
        if path.name.endswith(".pt"):
            from workers.models.sscd_torchscript import TorchScriptCopyDescriptor

            model: CopyDescriptor = TorchScriptCopyDescriptor(path, cfg, copy_identity(cfg) or "")
        else:
            from workers.models.sscd_onnx import OnnxCopyDescriptor

            model = OnnxCopyDescriptor(path, cfg, copy_identity(cfg) or "")
    except ModelUnavailable as exc:
        if settings.require_model:
            raise
        log.error("=" * 72)
        log.error("COPY DESCRIPTOR UNAVAILABLE: edited copies are found by hashes only (crops, rotations and "
                  "overlays are missed)")
        log.error("reason: %s", exc)
        log.error("fix: %s (or set require_model to make this fatal)", exc.fix)
        log.error("=" * 72)
        return None, {"copy_state": "unavailable", "copy_reason": str(exc), "copy_fix": exc.fix,
                      "copy_model": cfg.name}
    return model, {"copy_state": "loaded", "copy_model": model.identity, "copy_device": model.device}
