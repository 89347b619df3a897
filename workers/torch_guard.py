"""Make `import torchvision` (and so `import open_clip`) work on a CPU-only torch.

torchvision's PyPI wheel for torch 2.13 is a CUDA build. On the CPU torch its `_C.so` cannot load, and
torchvision's meta registrations then fail with "operator torchvision::nms does not exist". Before the
first import of torchvision we try to load its native library; only if that fails do we define the two
operator schemas the meta registrations expect. Nothing dupwatch uses needs those operators (images
are decoded with Pillow, not torchvision.io), and on a GPU host with a matching build the library
loads and this guard changes nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_state: dict[str, str] = {}


def ensure_torchvision_importable() -> str:
    """Prepare torchvision for import; return how: 'native', 'schemas' or 'already-imported'."""
    if "mode" in _state:
        return _state["mode"]
    if "torchvision" in sys.modules:
        _state["mode"] = "already-imported"
        return _state["mode"]
    import torch

    spec = importlib.util.find_spec("torchvision")
    lib = None
    if spec is not None and spec.submodule_search_locations:
        found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("_C*.so"))
        lib = found[0] if found else None
    try:
        if lib is None:
            raise OSError("torchvision native library not found")
        torch.ops.load_library(str(lib))
        _state["mode"] = "native"
    except (OSError, RuntimeError) as exc:
        define_fallback_schemas()
        log.debug("torchvision native ops unavailable (%s); defined fallback schemas", exc)
        _state["mode"] = "schemas"
    return _state["mode"]


def define_fallback_schemas() -> None:
    """Define `torchvision::nms` and `torchvision::qnms` so torchvision's meta registrations import."""
    import torch

    lib = torch.library.Library("torchvision", "DEF")  # must stay alive with the process
    for name in ("nms", "qnms"):
        if not torch._C._dispatch_has_kernel(f"torchvision::{name}") and not _has_schema(name):
            lib.define(f"{name}{_SCHEMA}")
    _state["lib"] = lib  # type: ignore[assignment]


def _has_schema(name: str) -> bool:
    import torch

    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False
