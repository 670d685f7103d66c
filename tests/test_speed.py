"""Speed work: the CPU session settings the runtime adopted, and the roofline's operation count."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nanoedge.targets import get_profile
from nanoedge.targets.session import session_options

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_cpu_sessions_skip_memory_pattern_planning():
    # docs/speed.md: same speed, ~40% lower peak RSS for a 512 px UNet step
    assert session_options(get_profile("cpu")).enable_mem_pattern is False
    assert session_options(get_profile("cpu")).enable_cpu_mem_arena is True  # turning the arena off was slower


def test_cpu_sessions_do_not_spin_unless_asked(monkeypatch):
    monkeypatch.delenv("NANOEDGE_SPIN", raising=False)
    assert session_options(get_profile("cpu")).get_session_config_entry("session.intra_op.allow_spinning") == "0"
    monkeypatch.setenv("NANOEDGE_SPIN", "1")
    with pytest.raises(Exception):  # onnxruntime raises for an entry that was never set
        session_options(get_profile("cpu")).get_session_config_entry("session.intra_op.allow_spinning")


def test_roofline_counts_every_conv_and_matmul(tiny_package: Path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from nanoedge.export.source import load_source

    sys.path.insert(0, str(BENCH))
    try:
        import roofline
    finally:
        sys.path.remove(str(BENCH))
    macs = roofline.unet_macs(tiny_package / "unet" / "model.onnx", batch=2, height=64, width=96)
    assert macs["unknown"] == 0

    # The same UNet in PyTorch at the same shape: Conv2d and Linear work counted by forward hooks.
    unet = load_source("preset:tiny-random").unet
    counted = {"conv": 0, "linear": 0}

    def conv_hook(module, inputs, output):
        counted["conv"] += output.numel() * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]

    def linear_hook(module, inputs, output):
        counted["linear"] += output.numel() * module.in_features

    for module in unet.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(conv_hook)
        elif isinstance(module, torch.nn.Linear):
            module.register_forward_hook(linear_hook)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    counted["attention"] = 0

    def counting_sdpa(query, key, value, *args, **kwargs):
        # QK^T and PV: batch * heads * Lq * Lk * head_dim multiply-accumulates each
        counted["attention"] += 2 * query.shape[:-1].numel() * key.shape[-2] * query.shape[-1]
        return sdpa(query, key, value, *args, **kwargs)

    with torch.no_grad(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
        unet(torch.randn(2, 4, 8, 12), torch.tensor([10.0, 10.0]), torch.randn(2, 77, 32))
    assert counted["attention"] > 0
    assert macs["Conv"] == counted["conv"]
    # ONNX MatMul/Gemm = the Linear layers + attention's two activation products (QK^T, PV)
    assert macs["MatMul"] + macs["Gemm"] == counted["linear"] + counted["attention"]
