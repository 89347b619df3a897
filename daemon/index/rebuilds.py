"""What of the vector index is partial while ranges are rebuilt from the catalog, as `status`, /readyz, the
metrics and the daemon's status line report it. Apart from daemon.index.vectors so that readers (the CLI,
the API) need not load usearch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REBUILDING = "rebuilding.json"
"""In a vector folder while a range is rebuilt: the ranges and how far each is (`VectorIndex.progress`)."""


def rebuilding(state_dir: Path) -> list[dict[str, Any]]:
    """The vector ranges being rebuilt, as the daemon's background thread last reported them (`status`)."""
    out = []
    for path in sorted(Path(state_dir).glob(f"vectors-*/{REBUILDING}")):
        try:
            out += json.loads(path.read_text())
        except (OSError, ValueError):  # gone or replaced between the glob and the read
            continue
    return out


def describe(rebuilding: list[dict[str, Any]]) -> str:
    """One line on what is partial, for `status`, /readyz and the daemon's status line."""
    return "; ".join(f"{r['index']} vectors of ids {r['lo'] + 1}-{r['hi']} rebuilding from the catalog, "
                     f"{r['built']:,} of {r['total']:,} (searched by hashes and the other segments meanwhile)"
                     for r in rebuilding)
