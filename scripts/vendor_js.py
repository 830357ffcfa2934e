"""Fetch the book's CDN JavaScript into `_vendor/`, so the site renders without network.

    python scripts/vendor_js.py          # fetch with `npm`; replaces any old _vendor/
    python scripts/vendor_js.py --check  # exit 1 if _vendor/ lacks the pinned versions

The published pages load three scripts from CDNs: MathJax (Sphinx's default
`mathjax_path`), require.js and the Jupyter widgets HTML manager (myst-nb's default
`nb_ipywidgets_js`). Without network the formulas stay raw TeX and the widgets stay
empty, so an offline build could not be checked. `npm pack` downloads each package as
the registry's checksummed tarball (no install, no scripts run); we keep only the files
the browser requests. The local Sphinx extension `book/_ext/page_scripts.py` uses
`_vendor/` when it is complete, and the CDN otherwise.

The versions are the ones the installed Sphinx and myst-nb load by default
(tests/test_page_scripts.py fails when an upgrade changes them). `_vendor/` is
git-ignored: nothing third-party is committed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "_vendor"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Package:
    """One npm package: what to fetch, which of its files to keep, and where they go
    under _static/."""

    name: str
    version: str
    folder: str  # the folder under _vendor/static/ (and so under the site's _static/)
    entry: str  # the file the pages load, relative to `folder`
    # files to keep, relative to the tarball's package/: "a/" a folder, "*" a glob
    keep: tuple[str, ...]

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


PACKAGES = (
    # Sphinx loads mathjax@3/es5/tex-mml-chtml.js; 3.2.2 is the last 3.x. The component
    # loads its fonts, TeX extensions and the accessibility/menu parts on demand,
    # relative to its own URL.
    Package(
        "mathjax",
        "3.2.2",
        "mathjax",
        "tex-mml-chtml.js",
        (
            "LICENSE",
            "es5/tex-mml-chtml.js",
            "es5/input/",
            "es5/output/chtml/",
            "es5/a11y/",
            "es5/ui/",
            "es5/sre/",
        ),
    ),
    # myst-nb loads require.js 2.3.4 (cdnjs' minified copy; npm ships the same release
    # unminified).
    Package("requirejs", "2.3.4", "requirejs", "require.js", ("require.js",)),
    # myst-nb loads html-manager 1.0.6 (ipywidgets 8). The AMD bundle finds its icon
    # fonts beside itself.
    Package(
        "@jupyter-widgets/html-manager",
        "1.0.6",
        "jupyter-widgets",
        "embed-amd.js",
        (
            "LICENSE",
            "dist/embed-amd.js",
            "dist/*.woff2",
            "dist/*.woff",
            "dist/*.ttf",
            "dist/*.eot",
            "dist/*.svg",
        ),
    ),
)


def _wanted(path: PurePosixPath, keep: tuple[str, ...]) -> bool:
    """Whether a tarball member (relative to package/) is one of the kept files."""
    text = path.as_posix()
    return any(
        text.startswith(rule)
        if rule.endswith("/")
        else path.match(rule)
        if "*" in rule
        else text == rule
        for rule in keep
    )


def _target(path: PurePosixPath) -> PurePosixPath:
    """Where a kept file lands: its path without the `es5/` or `dist/` build folder."""
    parts = path.parts
    return (
        PurePosixPath(*parts[1:])
        if parts[0] in ("es5", "dist") and len(parts) > 1
        else path
    )


def npm_pack(package: Package, workdir: Path) -> Path:
    """Download one package's tarball with `npm pack` (which checks the registry's
    integrity hash)."""
    result = subprocess.run(
        ["npm", "pack", package.spec, "--json", "--pack-destination", str(workdir)],
        capture_output=True,
        text=True,
        cwd=workdir,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"npm pack {package.spec} failed:\n{result.stderr.strip()}")
    filename = json.loads(result.stdout)[0]["filename"]
    return workdir / filename


def extract(tarball: Path, package: Package, static: Path) -> int:
    """Copy the kept files of one tarball to static/<folder>/; returns how many."""
    count = 0
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            inner = PurePosixPath(member.name)
            if (
                not member.isfile()
                or inner.parts[0] != "package"
                or ".." in inner.parts
            ):
                continue
            relative = PurePosixPath(*inner.parts[1:])
            if not _wanted(relative, package.keep):
                continue
            destination = static / package.folder / _target(relative)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, destination.open("wb") as out:
                shutil.copyfileobj(source, out)
            count += 1
    if not (static / package.folder / package.entry).is_file():
        sys.exit(
            f"{package.spec}: {package.entry} is not in the tarball; "
            f"update PACKAGES in {__file__}"
        )
    return count


def manifest() -> dict:
    """What the Sphinx extension reads: each package's version and the file to load."""
    return {
        package.folder: {
            "package": package.spec,
            "entry": f"{package.folder}/{package.entry}",
        }
        for package in PACKAGES
    }


def fetch(vendor: Path = VENDOR) -> None:
    """Fetch every package into a fresh folder, then swap it in, so a failed run leaves
    no half state."""
    if shutil.which("npm") is None:
        sys.exit(
            "npm is not installed: "
            "the book will load MathJax and the widget manager from CDNs"
        )
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        staging = work / "vendor"
        for package in PACKAGES:
            count = extract(npm_pack(package, work), package, staging / "static")
            print(f"{package.spec}: {count} files")
        (staging / MANIFEST).write_text(json.dumps(manifest(), indent=2) + "\n")
        if vendor.exists():
            shutil.rmtree(vendor)
        shutil.copytree(staging, vendor)
    print(
        f"wrote {vendor.relative_to(ROOT) if vendor.is_relative_to(ROOT) else vendor}"
    )


def check(vendor: Path = VENDOR) -> list[str]:
    """What is missing or stale in `vendor`; empty when it holds exactly the pins."""
    path = vendor / MANIFEST
    if not path.is_file():
        return [f"{path} is missing: run python scripts/vendor_js.py"]
    found = json.loads(path.read_text())
    problems = [
        f"{folder}: have {found.get(folder, {}).get('package')}, want {want['package']}"
        for folder, want in manifest().items()
        if found.get(folder) != want
    ]
    problems += [
        f"{entry['entry']} is missing"
        for entry in found.values()
        if not (vendor / "static" / entry["entry"]).is_file()
    ]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only check _vendor/ against the pins"
    )
    args = parser.parse_args()
    if args.check:
        problems = check()
        print("\n".join(problems) or "_vendor/ is complete")
        sys.exit(1 if problems else 0)
    fetch()


if __name__ == "__main__":
    main()
