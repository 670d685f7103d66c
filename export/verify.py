"""Export checks itself: ONNX Runtime output against PyTorch on the same inputs.

Apple's ml-stable-diffusion builds its PSNR check into conversion; we do the same with a max
absolute difference, scaled by the reference's magnitude so one tolerance fits hidden states
(~1) and decoded pixels alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .components import ComponentSpec


@dataclass
class Check:
    shape: str
    max_abs_diff: float
    reference_max_abs: float
    allowed: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.allowed

    def as_dict(self) -> dict:
        return {
            "inputs": self.shape,
            "max_abs_diff": self.max_abs_diff,
            "reference_max_abs": self.reference_max_abs,
            "allowed": self.allowed,
        }


def check_component(spec: ComponentSpec, model_file: Path, inputs: tuple[torch.Tensor, ...], tolerance: float) -> Check:
    """Run both and compare the first output; ``allowed = tolerance * max(1, max|ref|)``."""
    import onnxruntime as ort

    with torch.no_grad():
        reference = spec.module(*inputs)
    reference = (reference[0] if isinstance(reference, (tuple, list)) else reference).float().numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])
    feeds = {name: tensor.numpy() for name, tensor in zip(spec.input_names, inputs)}
    got = session.run([spec.output_names[0]], feeds)[0]
    del session
    ref_max = float(np.abs(reference).max())
    diff = float(np.abs(got.astype(np.float64) - reference.astype(np.float64)).max()) if got.shape == reference.shape else float("inf")
    shape = " ".join(f"{n}{list(t.shape)}" for n, t in zip(spec.input_names, inputs))
    return Check(shape, diff, ref_max, tolerance * max(1.0, ref_max))
