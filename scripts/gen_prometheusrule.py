"""Write deploy/prometheus/prometheusrule.yaml from deploy/prometheus/kubesolo-update.rules.yml.

The plain rules file is the source (promtool checks and tests it); the
prometheus-operator manifest carries the same groups under ``spec``, copied
line by line, so the two cannot drift (tests/contract/test_observability.py
checks that the committed manifest is this script's output).

Usage: python scripts/gen_prometheusrule.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "kubesolo-update.rules.yml"
MANIFEST = ROOT / "deploy" / "prometheus" / "prometheusrule.yaml"

HEADER = """\
# Generated from kubesolo-update.rules.yml by scripts/gen_prometheusrule.py: do not edit.
# The same alert rules as a prometheus-operator PrometheusRule. Apply it in the
# namespace of the Prometheus that scrapes the fleet, with the labels its
# ruleSelector wants (kube-prometheus-stack: `release: <its release name>`).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: kubesolo-update
  labels:
    app.kubernetes.io/name: kubesolo-update
    app.kubernetes.io/part-of: kubesolo-os
spec:
"""


def render(rules_text: str) -> str:
    """The manifest for a rules file: its body (after the leading comments) under ``spec``."""
    lines = rules_text.splitlines()
    while lines and (not lines[0].strip() or lines[0].startswith("#")):
        lines.pop(0)
    return HEADER + "".join(f"  {line}\n" if line.strip() else "\n" for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the manifest is stale")
    args = parser.parse_args()
    text = render(RULES.read_text(encoding="utf-8"))
    if args.check:
        if MANIFEST.read_text(encoding="utf-8") != text:
            sys.stderr.write(f"{MANIFEST} is stale: run python scripts/gen_prometheusrule.py\n")
            return 1
        return 0
    MANIFEST.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
