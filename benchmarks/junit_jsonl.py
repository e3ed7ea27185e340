#!/usr/bin/env python
"""pytest's JUnit XML as JSON lines: one ``test`` line per test case and a ``tests`` summary line.

    python benchmarks/junit_jsonl.py results.xml [--bench gpu_tests]

Used by ``gpu_suite.sh`` for the gpu-marked tests. Outcome: ``passed``, ``failed``, ``error`` or
``skipped`` (with the skip or failure message's first line).
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def records(path: Path, bench: str) -> list[dict]:
    """One record per ``testcase`` of the XML at ``path``, then a summary record."""
    root = ElementTree.parse(path).getroot()
    out: list[dict] = []
    for case in root.iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "failed" if tag == "failure" else tag
                message = (node.get("message") or node.text or "").strip().splitlines()[:1]
                message = message[0][:300] if message else None
                break
        out.append({"bench": bench, "kind": "test", "test": f"{case.get('classname')}::{case.get('name')}",
                    "outcome": outcome, "seconds": float(case.get("time") or 0.0), "message": message})
    counts = {k: sum(r["outcome"] == k for r in out) for k in ("passed", "failed", "error", "skipped")}
    out.append({"bench": bench, "kind": "tests", "total": len(out), **counts})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("xml", type=Path)
    parser.add_argument("--bench", default="gpu_tests")
    args = parser.parse_args(argv)
    if not args.xml.exists():
        print(f"junit_jsonl: {args.xml} does not exist (pytest did not run?)", file=sys.stderr)
        return 1
    for record in records(args.xml, args.bench):
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
