"""Every default of the daemon side, named and explained in one place (after rq's `defaults.py`).

Settings (daemon.config) refer to these names. What a worker needs (decode, model) has its defaults in
`workers.defaults`: a worker host needs nothing of the daemon.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

STATE_DIR = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "dupwatch"
"""Catalog, index, event log and the private Redis socket live here; one daemon owns one state dir."""

CONFIG_PATHS = (Path("/etc/dupwatch/config.toml"), Path.home() / ".config" / "dupwatch" / "config.toml")
"""TOML files read when present (later wins) unless --config / DUPWATCH_CONFIG names one."""

RUN_WORKERS = 1
"""Worker processes `dupwatch run` starts beside the daemon: one already uses every core for decoding."""

QUEUE_BATCH_SIZE = 32
"""Up to this many files travel in one rq job (a worker processes one job as one model batch)."""

QUEUE_BATCH_MS = 200
"""A partly filled batch is sent after this many milliseconds, bounding latency at low rates."""

JOB_TIMEOUT_S = 600
"""rq job timeout: a batch of big files on a slow CPU must fit; a hung decode is cut off here."""

PENDING_RETRY_S = 120
"""A file still pending this long after its job was queued is queued again (lost job, killed worker)."""

MAX_ATTEMPTS = 3
"""After this many attempts that produced no result (worker crashes), the file gets an error verdict."""

# Hash thresholds, in bits of 64 (pHash distances are always even: each hash has 32 ones); -1 disables a
# clause. Chosen with bench/calibrate.py on the calibration half of bench/data/acc (1,455 files: 1,248
# DISC21-style edits, 104 distractors with star fields, gradients, textures, documents, templates), after
# workers.image.hashing.detail_batch took star fields and gradients out of the hash search. bench.calibrate's grid
# (541 rules) has one rule with precision >= 0.99 and at most 1 % of distractors flagged: pHash 6, window 4,
# no dHash, no agreement (recall 0.514, precision 0.991, 1 distractor). Adding dHash at 2 bits (below the
# grid's steps; measured with the same replay) keeps both bounds and catches caption bands and meme text
# that move pHash but barely dHash: recall 0.523, precision 0.991, 1 distractor. dHash 3 reaches 0.990 and
# dHash 4 0.988; the pHash/dHash agreement (14/10) 0.956. With the copy descriptor installed, SSCD and
# verification catch the edits these clauses gave up. docs/detection.md says how the radii were chosen.

PHASH_MAX_DISTANCE = 6
"""pHash distance of the full frame or one of its flips/rotations for an edited copy."""

WINDOW_MAX_DISTANCE = 4
"""pHash distance via a crop or pad window. Tighter: each file offers 17 more chances to match."""

DHASH_MAX_DISTANCE = 2
"""dHash distance on its own for an edited copy: tight, since a dHash barely moves under caption bands
while unrelated smooth images land within 4-6 of each other."""

CONFIRM_PHASH_DISTANCE = -1
"""A looser pHash distance that counts when dHash agrees within CONFIRM_DHASH_DISTANCE (same file): off
(at 14/10 it matched 17 false pairs of the calibration half, most of them edits of different photos)."""

CONFIRM_DHASH_DISTANCE = 10

COPY_SCORE: float | None = None
"""Copy-descriptor (SSCD) score (0-100) at or over which a file is an edited copy on its own. None: the
copy descriptor's calibrated value from CALIBRATED_COPY (none for an uncalibrated file: no verdicts)."""

VERIFY_SCORE: float | None = None
"""Copy-descriptor score from which geometric verification is asked: a borderline score it confirms is
a copy, and at or over it the score is the second signal a loose hash match needs. None: calibrated."""

VETO_SCORE: float | None = None
"""A hash match the copy descriptor scores under this is not a copy (look-alike textures). None: calibrated."""

MIN_OVERLAP = 0.5
"""A verification confirms a copy only where the two frames overlap this much: the larger of the share of the copy
the original fills and the share of the original the copy shows (workers.image.align.Alignment.overlap). A crop, a
pad, a paste or a rotation keeps one of them near 1; two shots of one scene panned apart share a strip of each
frame, hundreds of consistent inliers in it (bursts). docs/detection.md says how it was chosen."""

VERIFY = True
"""Geometric verification settles the candidates whose scores are not conclusive. Off, a borderline copy score
is `new` and a loose hash match needs the copy score as its second signal: faster, lower recall (docs/detection.md's
accuracy table has both modes)."""

MIN_INLIERS = 15
"""RANSAC inliers (SIFT at 512 px, ratio test) that make a geometric verification a confirmation: 15 kept 96 %
of true pairs and rejected 31 of 33 non-template false matches on the benchmark (docs/detection.md)."""

SIMILAR_SCORE: float | None = None
"""Semantic (open_clip) score (0-100) at or over which a file is similar. None: from CALIBRATED."""

CALIBRATED_COPY: dict[tuple[str, int, str], tuple[float, float, float]] = {
    ("sscd", 320, "square"): (96.0, 55.0, 55.0),
    ("sscd_distilled", 320, "square"): (96.0, 55.0, 55.0),
}
"""(copy, verify, veto) copy-descriptor scores per (copy_model.name, input_size, resize). Cosine x 100.
docs/detection.md says how they were chosen (bench/calibrate.py --copy)."""

CALIBRATED: dict[tuple[str, str], tuple[float, float]] = {
    ("ViT-B-32", "laion2b_s34b_b79k"): (92.0, 85.0),
    ("ViT-B-32", "openai"): (93.0, 86.0),
}
"""(copy, similar) semantic scores per (model, pretrained tag); only `similar` is used since the copy
descriptor makes copy verdicts. Cosine x 100. Not measured on this project's bench (weights cannot be fetched
on the build machines): values from published CLIP near-duplicate practice."""

EXPLAIN_EDITS = True
"""Every edited copy is aligned with its match (SIFT + RANSAC at <= 512 px, in the verification pool, never on
the writer's thread) so its verdict says what was edited. It costs about 55 ms of CPU per copy (not per file) on
2 cores; turn it off for a bulk backfill where only the verdicts matter. Uncertain candidates are verified
either way: that is part of the decision."""

TOP_K = 10
"""Nearest neighbours fetched from the vector index before thresholds are applied."""

INDEX_DTYPE: Final = "f16"
"""usearch storage for vectors: f16 keeps cosine ranking intact at half the memory of f32."""

WATCH_SETTLE_MS = 1000
"""A file seen only as 'created' (no close event, e.g. polling or a move) is taken once its size and
mtime have been stable this long."""

WATCH_POLL_INTERVAL_S = 2.0
"""watch.poll: seconds between two snapshots of a root (each one walks the whole tree)."""

API_HOST = "127.0.0.1"
"""The HTTP API listens on loopback unless told otherwise."""

API_PORT = 8765

API_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""Largest image `POST /api/v1/search` accepts (larger: 413). A search decodes the upload in the daemon
process, so this bounds the memory one request can take; 20 MiB covers camera JPEGs and most HEICs."""

API_THUMBNAIL_PX = 256
"""Default long side of thumbnails the API serves (the review page shows them at this size)."""

COMMAND_TIMEOUT_S = 30.0
"""A `[[commands]]` program still running after this long is killed (and the kill is logged)."""

WEBHOOK_TIMEOUT_S = 10.0
"""Per-request timeout for a webhook delivery."""

WEBHOOK_RETRY_BASE_S = 1.0
"""Bound on the wait before the first retry of a webhook delivery. Every wait is drawn uniformly from
[0, bound] ("full jitter"), so a fleet of deliveries failing together does not retry in lock-step."""

WEBHOOK_RETRY_FACTOR = 2.0
"""The bound is multiplied by this after each failed attempt: 1, 2, 4, ... s."""

WEBHOOK_RETRY_CAP_S = 600.0
"""The bound never exceeds 10 minutes (reached from the 11th attempt on): a receiver that comes back is
tried again within 10 minutes at worst."""

WEBHOOK_MAX_ATTEMPTS = 24
"""Attempts before a delivery goes dead (a durable dead letter, replayable with `dupwatch webhook replay`).
With the values above the waits are bounded by 8,823 s in all (about 2.5 h; about 1.2 h expected with
full jitter), so a receiver down for a lunch break or a redeploy loses nothing. Only the head of an
endpoint's queue is ever retried, so a long outage dead-letters one delivery per such window and the
rest wait their turn. (8 attempts would give up after about 1 minute on average.)"""

WEBHOOK_RETRY_AFTER_CAP_S = 600.0
"""A receiver's Retry-After (on 429 or 5xx) is honoured up to this many seconds."""

WEBHOOK_POLL_S = 0.2
"""The deliverer re-reads its outbox this often even when not woken: it picks up rows written by another
process (`webhook replay`) and keeps the file-closed-to-webhook latency well under the 0.5 s target."""
