"""``nanoedge targets`` and ``nanoedge check PKG --target T``."""

from __future__ import annotations

import json
import sys

import click

from .common import handle_errors


@click.command()
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def targets(as_json):
    """List every execution target, whether it is usable here, and what is missing when not."""
    from nanoedge.targets import detect, get_profile, known_targets
    from nanoedge.targets.cpuinfo import cpu_info

    rows = []
    for name in known_targets():
        profile = get_profile(name)
        status = detect(profile)
        rows.append(
            {**profile.as_dict(), "usable": status.usable, "simulated": status.simulated, "reason": status.reason, "install": status.hint}
        )
    usable = {row["name"] for row in rows if row["usable"]}
    for row in rows:  # name the alternative only where it works here
        row["use_instead"] = row["instead"] if not row["usable"] and row["instead"] in usable else None
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    cpu = cpu_info()
    click.echo(f"CPU: {cpu.describe()} [kind {cpu.kind}]")
    width = max(len(row["name"]) for row in rows) + 1
    indent = " " * (width + 9)
    for row in rows:
        mark = click.style("usable ", fg="green") if row["usable"] else click.style("missing", fg="yellow")
        click.echo(f"{row['name']:<{width}}{mark}  {row['reason']}")
        if row["use_instead"]:
            click.echo(f"{indent}-> use {row['use_instead']} instead (usable here)")
        elif not row["usable"] and row["install"]:
            click.echo(f"{indent}-> {row['install']}")
        needs = ["static shapes"] if row["needs_static_shapes"] else []
        needs.append("schemes " + "/".join(row["schemes"]))
        if row["full_offload"]:
            needs.append("full offload")
        click.echo(f"{indent}{row['description']}; needs {', '.join(needs)}")


@click.command()
@click.argument("package")
@click.option("--target", "target_name", required=True, help="Target to check against (see `nanoedge targets`).")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def check(package, target_name, as_json):
    """How much of each component the target's accelerator takes, and which ops fall back.

    Exits 1 when the target requires full offload (qnn) and does not get it, or when the
    package does not meet the target's needs (static shapes, precision).
    """
    from nanoedge.core.manifest import Manifest
    from nanoedge.targets import resolve_target
    from nanoedge.targets.check import check_package

    manifest = Manifest.load(package)
    profile = resolve_target(target_name)
    report = check_package(manifest, profile)
    if as_json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        click.echo(f"{manifest.id} on {profile.name} ({profile.accelerator})")
        for c in report.components:
            if c.error:
                click.echo(f"  {c.component:<13} could not be placed: {c.error}")
                continue
            ops = ", ".join(f"{op} x{n}" for op, n in c.fallback_ops.items()) or "none"
            click.echo(
                f"  {c.component:<13} {c.accelerator_nodes}/{c.total_nodes} nodes "
                f"on {profile.accelerator} ({c.fraction:.1%}); CPU fallback: {ops}"
            )
        for problem in report.problems:
            click.echo(f"  problem: {problem}")
        verdict = "OK" if report.ok else "NOT OK"
        click.echo(f"  {verdict}" + (" (full offload required)" if report.full_offload_required else ""))
    if not report.ok:
        sys.exit(1)


@click.command(name="compile")
@click.argument("package")
@click.option("--target", "target_name", required=True, help="Target to precompile for (qnn).")
@click.option("-o", "--output", required=True, type=click.Path(), help="New package folder.")
@click.option("--overwrite", is_flag=True)
@handle_errors
def compile_cmd(package, target_name, output, overwrite):
    """Precompile PACKAGE for a target (QNN context binaries) so that it loads fast on device."""
    from nanoedge.targets import get_profile
    from nanoedge.targets.compile import compile_package

    def report(name: str, seconds: float) -> None:
        click.echo(f"  {name}: compiled in {seconds:.1f} s", err=True)

    manifest = compile_package(package, get_profile(target_name), output, overwrite=overwrite, on_component=report)
    click.echo(f"wrote {manifest.root} (runs on {target_name} only)")
