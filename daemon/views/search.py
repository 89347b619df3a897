"""Search the catalog with any image: `dupwatch query` and the API's search-by-upload.

Read-only: features are computed in-process with the same pipeline the workers use, and compared with
the same rules the owner applies, but nothing is registered or written.
"""

from __future__ import annotations

from daemon.config import Settings
from daemon.index.catalog import Catalog, Row
from daemon.index.owner import IndexOwner
from daemon.index.verdict import hash_score
from daemon.state import StateDir
from workers.features import Features
from workers.models.loading import load_models
from workers.pipeline import Pipeline

PROBE_ID = 1 << 62


def search_image(settings: Settings, image: str, top_k: int, owner: IndexOwner | None = None) -> list[dict]:
    """Top-k catalogued files for `image`, best first, with the kind each would be judged."""
    catalog = owner.catalog if owner else Catalog(StateDir(settings.state_dir, create=False).catalog, read_only=True)
    owner = owner or IndexOwner(settings, catalog)
    embedder, copier, _ = load_models(settings)
    pipeline = Pipeline(settings.decode, embedder, copier, follow_symlinks=True)  # the image the user named
    try:
        feats = pipeline.run([(PROBE_ID, image)])[0]
    finally:
        pipeline.close()
    if feats.error:
        raise ValueError(f"{image}: {feats.error}")
    return rank(owner, probe_row(feats), top_k)


def probe_row(feats: Features) -> Row:
    """A catalog-shaped row for a searched image: an id after every real one, so all files are 'earlier'."""
    known = {k: v for k, v in feats.stored().items() if k in Row.__dataclass_fields__ and k != "size"}
    return Row(id=PROBE_ID, path=feats.path, size=feats.size, mtime_ns=None, state="featured", detected_at=0.0,
               **known)


def signals_used(owner: IndexOwner, probe: Row) -> str:
    """Which signals a search could use: a vector only counts when this index holds that model's vectors."""
    used = ["hashes"]
    if owner.copies.vector(probe) is not None:
        used.append("copy descriptor")
    if owner.vectors.vector(probe) is not None:
        used.append("embedding")
    return " and ".join(used) if len(used) > 1 else "hashes only"


def rank(owner: IndexOwner, probe: Row, top_k: int) -> list[dict]:
    """Scores for every candidate any signal proposes, merged per file, best first."""
    scores: dict[int, dict] = {}

    def offer(file_id: int, score: float, signal: str, distance: int | None) -> None:
        cur = scores.get(file_id)
        if cur is None or score > cur["score"]:
            scores[file_id] = {"id": file_id, "score": round(score, 1), "signal": signal, "hash_distance": distance}

    if probe.sha256:
        for r in owner.catalog.query("SELECT id FROM files WHERE sha256 = ? AND state = 'decided'", (probe.sha256,)):
            offer(r["id"], 100.0, "sha256", 0)
    if probe.windows is not None and probe.dihedral is not None:
        for hit in owner.hashes.nearest(probe.windows, probe.dihedral, probe.dhash or 0, probe.id, top_k):
            offer(hit.id, hash_score(hit.distance), "phash", hit.distance)
    for file_id, score in owner.copies.search(probe, top_k, set()):
        offer(file_id, score, "sscd", None)
    for file_id, score in owner.vectors.search(probe, top_k, set()):
        offer(file_id, score, "clip", None)
    out = []
    for item in sorted(scores.values(), key=lambda d: (-d["score"], d["id"]))[:top_k]:
        row = owner.catalog.get(item["id"])
        if row is None:
            continue
        decision = owner.evaluate(probe, excluded={i for i in scores if i != item["id"]})
        item.update(path=row.path, kind=decision.kind if decision.match_id == item["id"] else "new")
        out.append(item)
    return out

