"""``nanoedge info PKG [--json]``."""

from __future__ import annotations

import json
import sys

import click

from .common import handle_errors


def _human_bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count} B"
        count /= 1024
    return str(count)


@click.command()
@click.argument("package", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.option("--verify", is_flag=True, help="Also check every file's sha256.")
@handle_errors
def info(package, as_json, verify):
    """Show what a package holds: components, parameters, sizes, defaults, provenance."""
    from nanoedge.core.integrity import verify_package
    from nanoedge.core.manifest import Manifest

    if package is None:
        from nanoedge.runtime.default_model import default_package_path

        package = default_package_path()
    manifest = Manifest.load(package)
    if verify:
        verify_package(manifest, use_cache=False)
    if as_json:
        json.dump(manifest.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    files = manifest.files
    total_bytes = sum(f["bytes"] for f in files.values())
    click.echo(f"{manifest.id}  ({manifest.root})")
    click.echo(f"  family     {manifest.family}   package {_human_bytes(total_bytes)} in {len(files)} files")
    total_params = 0
    click.echo("  components")
    for name, comp in manifest.components.items():
        size = sum(files.get(f, {}).get("bytes", 0) for f in comp.get("files", []))
        params = int(comp.get("parameters", 0))
        total_params += params
        check = comp.get("verification", {}).get("max_abs_diff")
        check_text = f"  max|onnx-torch| {check:.1e}" if check is not None else ""
        fused = comp.get("fused_attention")
        fused_text = f"  attention fused x{fused} (CPU/GPU)" if fused else ""
        click.echo(
            f"    {name:<13}{params / 1e6:9.1f} M params  {comp.get('precision', '?'):<6}{_human_bytes(size):>11}{check_text}{fused_text}"
        )
    click.echo(f"    {'total':<13}{total_params / 1e6:9.1f} M params")
    decoder = manifest.decoder()
    shift = f" + {decoder['shift_factor']:g}" if decoder["shift_factor"] else ""
    click.echo(f"  decoder    {decoder['class']} ({decoder['family']}): latents / {decoder['scaling_factor']:g}{shift}, "
               f"output range {decoder['output_range'][0]:g}..{decoder['output_range'][1]:g}")
    rules = manifest.size_rules()
    click.echo(f"  sizes      {'; '.join(rules.describe())}")
    d = manifest.defaults
    sched = manifest.default_scheduler
    click.echo(f"  defaults   size {d.get('size')}, {d.get('steps')} steps, guidance {d.get('guidance')}, scheduler {sched}")
    prov = manifest.provenance
    src = prov.get("source", {})
    src_text = src.get("name") or src.get("repo_id") or src.get("path") or "?"
    tools = prov.get("tools", {})
    click.echo(f"  provenance {src.get('kind', '?')}:{src_text}, {prov.get('exporter')} opset {prov.get('opset')}, "
               f"torch {tools.get('torch', '?')}, exported {prov.get('exported_at', '?')}")
    quant = manifest.quantization
    if quant:
        from nanoedge.quantize.summary import describe_quantization

        lines = describe_quantization(quant)
        click.echo(f"  quantized  {lines[0]}")
        for line in lines[1:]:
            click.echo(f"             {line}")
    if verify:
        click.echo("  integrity  every file matches its sha256")
