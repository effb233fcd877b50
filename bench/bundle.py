#!/usr/bin/env python3
"""The browser bundle as it travels: what every page downloads before it hydrates, and what
each page split into its own chunks (app.rs, `cargo leptos build --split`) downloads on top.

Sizes are gzip -9, as a server would send them. `make bundle-budget` calls this with the
budgets and fails above them; `make bench` (bench/system.py) imports `measure` for its report.

    python3 bench/bundle.py target/site/pkg [--budget-kb N] [--page-budget-kb N]
"""

import argparse
import gzip
import json
import pathlib
import re
import sys

# The wasm every page loads, named after cargo-leptos' output name (Makefile, LEPTOS_OUTPUT_NAME).
MAIN = "kubefn.wasm"
# Written by `cargo leptos build --split`: for each split function, the chunks it needs.
MANIFEST = "__wasm_split_manifest.json"


def gzipped(path):
    return len(gzip.compress(path.read_bytes(), 9))


def page_name(split_function):
    """`__admin_route_view_4877…` (a LazyRoute's view, app.rs) → `admin`."""
    return re.sub(r"_route_view_\d+$", "", split_function.strip("_")).replace("_", " ")


def measure(pkg):
    """The main wasm (raw and gzipped), per lazily loaded page the gzipped bytes it adds and the
    total of a visit that starts on it (main wasm + its chunks), and every file together; in
    bytes."""
    pkg = pathlib.Path(pkg)
    main = pkg / MAIN
    main_gzip = gzipped(main)
    manifest_path = pkg / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    # Each chunk compressed once, though several pages share it. From the manifest, not a
    # listing: an earlier build's chunks may still lie in the directory.
    chunk_gzip = {chunk: gzipped(pkg / f"{chunk}.wasm") for chunks in manifest.values() for chunk in chunks}
    pages = {}
    for function, chunks in sorted(manifest.items()):
        added = sum(chunk_gzip[chunk] for chunk in chunks)
        pages[page_name(function)] = {"added_gzip": added, "first_visit_gzip": main_gzip + added}
    all_files = main_gzip + sum(chunk_gzip.values())
    return {"main_raw": main.stat().st_size, "main_gzip": main_gzip, "pages": pages, "all_files_gzip": all_files}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pkg", help="the site's pkg directory, e.g. target/site/pkg")
    parser.add_argument("--budget-kb", type=int, help="fail when the main wasm is over this, gzipped")
    parser.add_argument("--page-budget-kb", type=int,
                        help="fail when a visit that starts on a split page downloads more than this")
    args = parser.parse_args()
    sizes = measure(args.pkg)
    print(f"the wasm every page loads is {sizes['main_gzip'] / 1000:.0f} KB gzipped "
          f"({sizes['main_raw'] / 1000:.0f} KB raw)")
    for name, page in sizes["pages"].items():
        print(f"  {name}: +{page['added_gzip'] / 1000:.0f} KB, {page['first_visit_gzip'] / 1000:.0f} KB on a first visit")
    failures = []
    if args.budget_kb and sizes["main_gzip"] > args.budget_kb * 1000:
        failures.append(f"the wasm every page loads is over its budget of {args.budget_kb} KB")
    heaviest = max(sizes["pages"].items(), key=lambda item: item[1]["first_visit_gzip"], default=None)
    if args.page_budget_kb and heaviest and heaviest[1]["first_visit_gzip"] > args.page_budget_kb * 1000:
        failures.append(f"a first visit to the {heaviest[0]} page is over its budget of {args.page_budget_kb} KB")
    if args.page_budget_kb and not sizes["pages"]:
        failures.append("no split pages found: was the bundle built with `cargo leptos build --split`?")
    for failure in failures:
        print(f"{failure}: see docs/BUNDLE.md for what takes the space", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
