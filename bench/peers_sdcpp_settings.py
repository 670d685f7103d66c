"""Find stable-diffusion.cpp's best settings on this CPU before racing it: threads, flash
attention, direct convolution, one process per setting, settings interleaved over rounds.

    python bench/peers_sdcpp_settings.py --work /tmp/compare --model sdcpp/q8_0.gguf \
        --config 512x512:2:1 --rounds 1 --out docs/benchmarks/sdcpp-settings.json

Prints one row per run (image s, UNet s/step from sd.cpp's step callbacks, VAE s, peak RSS)
and the median per setting; the fastest becomes ``bench/peers.py``'s ``SDCPP_OPTIONS``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare_report import load_average, parse_config  # noqa: E402
from peers import SDCPP_OPTIONS  # noqa: E402

# each setting changes one thing from the binding's defaults (1 thread on a 2-core box, no flash, im2col convolution)
SETTINGS = {
    "defaults": {"n_threads": -1, "diffusion_flash_attn": False},
    "threads2": {"n_threads": 2, "diffusion_flash_attn": False},
    "threads2+flash": {"n_threads": 2, "diffusion_flash_attn": True},
    "threads2+flash+conv-direct": {"n_threads": 2, "diffusion_flash_attn": True, "diffusion_conv_direct": True},
    "threads2+flash+vae-conv-direct": {"n_threads": 2, "diffusion_flash_attn": True, "vae_conv_direct": True},
}


def measure(work: Path, model: str, config, name: str, options: dict, round_index: int) -> dict:
    folder = work / "sdcpp-settings"
    folder.mkdir(parents=True, exist_ok=True)
    record, image = folder / f"{config.key}-{name}-r{round_index}.json", folder / f"{config.key}-{name}-r{round_index}.png"
    latents = folder / "unused-latents.npy"  # sd.cpp draws its own noise; the worker still wants a file
    if not latents.exists():
        import numpy as np

        np.save(latents, np.zeros((1, 4, config.height // 8, config.width // 8), dtype=np.float32))
    opts = {**SDCPP_OPTIONS, **options}
    cmd = [
        sys.executable,
        str(HERE / "compare_worker.py"),
        "sdcpp",
        str(work / model),
        "--size",
        config.size,
        "--steps",
        str(config.steps),
        "--guidance",
        f"{config.guidance:g}",
        "--latents",
        str(latents),
        "--images",
        "1",
        "--image",
        str(image),
        "--json",
        str(record),
        "--options",
        json.dumps(opts, sort_keys=True),
    ]
    load = load_average()
    started = time.time()
    with open(folder / f"{config.key}-{name}-r{round_index}.log", "w") as log:
        done = subprocess.run(cmd + ["--started", repr(started)], stdout=log, stderr=subprocess.STDOUT)
    row = {
        "setting": name,
        "options": opts,
        "round": round_index,
        "ok": done.returncode == 0 and record.exists(),
        "load_before": load,
        "wall_s": round(time.time() - started, 1),
    }
    if row["ok"]:
        data = json.loads(record.read_text())
        stages = data["info"].get("stages", {})
        row.update(
            {
                "image_s": round(data["image_s"][0], 2),
                "cpu_s": round(data["image_cpu_s"][0], 1),
                "peak_rss_mib": round(data["peak_rss_mib"]),
                "unet_step_s": stages.get("unet_step_s"),
                "vae_s": stages.get("vae_and_rest_s"),
                "text_encoder_s": stages.get("text_encoder_s"),
            }
        )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="the folder `compare.py prepare --peers sdcpp` wrote")
    parser.add_argument("--model", default="sdcpp/q8_0.gguf", help="GGUF under WORK")
    parser.add_argument("--config", type=parse_config, default=parse_config("512x512:2:1"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma list of names from SETTINGS")
    parser.add_argument("--out", type=Path, default=None, help="JSON of every run")
    args = parser.parse_args(argv)
    names = [n for n in args.settings.split(",") if n]
    rows = []
    for round_index in range(1, args.rounds + 1):
        for name in names:
            row = measure(args.work, args.model, args.config, name, SETTINGS[name], round_index)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "options"}), flush=True)
    print(f"\n{args.model} {args.config.key}: median per setting")
    print("| setting | image s | UNet s/step | VAE s | peak RSS MiB | n |\n|---|---:|---:|---:|---:|---:|")
    for name in names:
        ok = [r for r in rows if r["setting"] == name and r["ok"]]
        if not ok:
            print(f"| {name} | failed | — | — | — | 0 |")
            continue

        def med(key: str, ok: list[dict] = ok) -> float:
            values = [r[key] for r in ok if r.get(key) is not None]
            return statistics.median(values) if values else float("nan")

        print(f"| {name} | {med('image_s'):.2f} | {med('unet_step_s'):.2f} | {med('vae_s'):.2f} | {med('peak_rss_mib'):.0f} | {len(ok)} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
