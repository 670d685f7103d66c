"""``bench/compare.py prepare``: the shared diffusers checkpoint, optimum's export, the peers' models.

Also the provenance check ``run`` applies to every nanoedge package: it must come from the
same preset and seed as ``WORK/diffusers`` (recorded here in ``compare_source.json``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from nanoedge.core.manifest import Manifest

log = logging.getLogger("bench.compare")


def prepare(
    preset: str, seed: int, work: Path, skip_optimum: bool = False, peers: list[str] | None = None, hybrid_samples: int = 100
) -> None:
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "diffusers"
    if not (ckpt / "model_index.json").exists():
        from nanoedge.export.source import load_source, save_checkpoint

        started = time.perf_counter()
        model = load_source(f"preset:{preset}", seed)
        save_checkpoint(model, ckpt)
        (ckpt / "compare_source.json").write_text(json.dumps({"preset": preset, "seed": seed}))
        log.info("diffusers checkpoint written to %s in %.1f s", ckpt, time.perf_counter() - started)
    else:
        log.info("diffusers checkpoint already at %s", ckpt)
    onnx_dir = work / "optimum"
    if peers:  # stable-diffusion.cpp / OpenVINO GenAI models from the same folder (bench/peers.py)
        from peers import prepare_peers

        failures = prepare_peers(work, peers, hybrid_samples)
        if failures:
            raise SystemExit("peer conversion failed:\n" + "\n".join(failures))
    if skip_optimum or (onnx_dir / "model_index.json").exists():
        log.info("optimum export %s", "skipped" if skip_optimum else f"already at {onnx_dir}")
        return
    from optimum.exporters.onnx import main_export

    started = time.perf_counter()
    # optimum's own exporter, as a user runs it (optimum-cli export onnx --task text-to-image);
    # validation is skipped (it re-runs every model in PyTorch): the run's PSNR column checks the images
    main_export(str(ckpt), output=str(onnx_dir), task="text-to-image", do_validation=False)
    log.info("optimum export written to %s in %.1f s", onnx_dir, time.perf_counter() - started)
    (onnx_dir / "compare_export.json").write_text(json.dumps({"source": str(ckpt), "seconds": round(time.perf_counter() - started, 1)}))


def check_provenance(package: str, work: Path) -> str | None:
    """Why ``package`` is not built from the same preset/seed as WORK's checkpoint (None = fine)."""
    source_file = work / "diffusers" / "compare_source.json"
    if not source_file.exists():
        return f"{source_file} is missing: run `bench/compare.py prepare` first"
    want = json.loads(source_file.read_text())
    got = Manifest.load(package).provenance.get("source") or {}
    if got.get("kind") != "preset" or got.get("name") != want["preset"] or int(got.get("seed", -1)) != int(want["seed"]):
        return f"{package} was exported from {got}, not preset:{want['preset']} seed {want['seed']}"
    return None
