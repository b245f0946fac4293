"""Renders the chart with the real Helm engine (helm-python-sdk, offline).

    render.py CHART VALUES_JSON OUT_DIR

Validates the values against values.schema.json and lints the chart, then
writes each rendered manifest to OUT_DIR (one file per template, for
checkov) and all of them as a JSON array to OUT_DIR/manifests.json (for
the API schema validation and the tests). A refusal (schema, lint or
render) is printed on stderr with exit status 3.
"""

import json
import sys
from pathlib import Path

import helm_python as helm
import yaml

chart_dir, values_json, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
values = json.loads(values_json)
out_dir.mkdir(parents=True, exist_ok=True)
try:
    with helm.Chart.load(chart_dir) as chart:
        chart.validate_schema(values)
        lint = helm.lint(chart_dir, values, strict=True, namespace="mcp")
        rendered = chart.render(values=values, name="demo", namespace="mcp", is_install=True)
except helm.HelmError as error:  # schema, lint and render refusals
    print(f"{type(error).__name__}: {error}", file=sys.stderr)
    sys.exit(3)
# Severity 2 is a warning, 3 an error; either fails (strict).
problems = [m for m in lint.get("messages", []) if m.get("severity", 0) >= 2] + lint.get("errors", [])
if problems:
    print(f"lint: {json.dumps(problems)}", file=sys.stderr)
    sys.exit(3)
manifests = []
for path, text in sorted(rendered.items()):
    if not path.endswith((".yaml", ".yml")) or not text.strip():
        continue
    documents = [d for d in yaml.safe_load_all(text) if d]
    if documents:
        (out_dir / path.replace("/", "_")).write_text(text)
        manifests.extend(documents)
(out_dir / "manifests.json").write_text(json.dumps(manifests, indent=1))
print(json.dumps(manifests))
