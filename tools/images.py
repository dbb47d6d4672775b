"""Builds the container images that BUILD names (`make images`).

  python -m tools.images [--dry-run] [NAME ...]

Prints the `docker build` command of every image (or of the images NAMEd, e.g. `router
jobs`) and runs them one after another from the repository root. Where docker is missing
or its daemon does not answer, it lists the commands, says why they did not run and exits
1; --dry-run only lists them.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys

from tools import build_manifest

ROOT = build_manifest.ROOT


def revision() -> str:
    """The commit the images are built from (their org.opencontainers.image.revision)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def docker_problem() -> str:
    """Why `docker build` cannot run here, or "" when it can."""
    if not shutil.which("docker"):
        return "docker is not installed here"
    try:
        subprocess.run(["docker", "info"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "docker is installed but its daemon does not answer (`docker info` failed)"
    return ""


def build_command(image: build_manifest.Image, rev: str) -> list[str]:
    return ["docker", "build", "-f", image.dockerfile, "-t", image.ref,
            "--build-arg", f"VERSION={image.version}", "--build-arg", f"REVISION={rev}", "."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these images")
    parser.add_argument("--dry-run", action="store_true", help="list the commands only")
    args = parser.parse_args(argv)
    images = sorted(build_manifest.images(build_manifest.load()).values(),
                    key=lambda i: i.name)
    unknown = set(args.names) - {i.name for i in images}
    if unknown:
        print(f"error: no image named {', '.join(sorted(unknown))} in BUILD "
              f"(images: {', '.join(i.name for i in images)})", file=sys.stderr)
        return 2
    rev = revision()
    selected = [i for i in images if not args.names or i.name in args.names]
    commands = [build_command(i, rev) for i in selected]
    problem = "" if args.dry_run else docker_problem()
    if args.dry_run or problem:
        for command in commands:
            print(shlex.join(command))
        if args.dry_run:
            return 0
        print(f"images: {problem}, so none of the {len(commands)} commands above ran; run "
              f"them from {ROOT} where docker works", file=sys.stderr)
        return 1
    for command in commands:
        print(f"+ {shlex.join(command)}", flush=True)
        if subprocess.run(command, cwd=ROOT).returncode:
            print(f"images: {shlex.join(command)} failed", file=sys.stderr)
            return 1
    print(f"images: built {', '.join(i.ref for i in selected)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
