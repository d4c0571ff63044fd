#!/usr/bin/env python3
"""Checks `tpserve plan --json` against docs/plan.schema.json with the `jsonschema` package (a
validator nobody here wrote), for plans and infeasible results over a spread of models and cards,
plus the cross-field facts a schema cannot say (ranks inside their bands, layers covered once)."""
import json
import subprocess
import sys
from pathlib import Path

import jsonschema

ROOT = Path(__file__).resolve().parents[2]
TPSERVE = sys.argv[1]
CASES = [
    ("llama-3.1-70b", "4xrtx5090", ["--format", "int8"], 0),
    ("llama-3.1-70b", "4xrtx5090", [], 3),
    ("qwen2.5-32b", "3xrtx5090", [], 0),
    ("smollm2-135m", "2xcpu:12:20:0.2", [], 0),
    ("qwen2.5-32b", "rtx5090,rtx5090,rtx4090", ["--format", "int8", "--objective", "throughput"], 0),
    ("mixtral-8x7b", "2xh100-sxm", ["--kv-dtype", "fp8"], 0),
    (str(ROOT / "tests/fixtures/gguf/tiny-qwen2-tied.gguf"), "2xcpu:1:10:0.1", [], 0),
]


def main() -> int:
    schema = json.loads((ROOT / "docs/plan.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    failures = 0
    for model, gpus, extra, want in CASES:
        proc = subprocess.run([TPSERVE, "plan", "-m", model, "-g", gpus, "--json", *extra],
                              capture_output=True, text=True, check=False)
        label = f"{Path(model).name} on {gpus} {' '.join(extra)}"
        if proc.returncode != want:
            print(f"FAIL {label}: exit {proc.returncode}, wanted {want}\n{proc.stderr}")
            failures += 1
            continue
        doc = json.loads(proc.stdout)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        for e in errors:
            print(f"FAIL {label}: {'/'.join(map(str, e.path))}: {e.message}")
        failures += len(errors)
        if doc["feasible"]:
            covered = 0
            for stage in doc["stages"]:
                if stage["layers"][0] != covered:
                    print(f"FAIL {label}: stage {stage['index']} starts at {stage['layers'][0]}, not {covered}")
                    failures += 1
                covered = stage["layers"][1]
            if covered != doc["model"]["layers"]:
                print(f"FAIL {label}: layers covered up to {covered} of {doc['model']['layers']}")
                failures += 1
            for r in doc["per_rank"]:
                b = r["bytes"]
                if b["total"] != b["weights"] + b["kv_cache"] + b["activations"] + b["runtime"]:
                    print(f"FAIL {label}: rank {r['rank']} total is not the sum of its parts")
                    failures += 1
                if not r["band"]["min_bytes"] <= b["total"] <= r["band"]["max_bytes"]:
                    print(f"FAIL {label}: rank {r['rank']} outside its band")
                    failures += 1
        print(f"ok   {label}: {'plan ' + doc['shape'] if doc['feasible'] else 'nothing fits'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
