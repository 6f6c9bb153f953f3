"""The ``turbovaed.bench/1`` results schema: load, validate, and parse results JSON."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from turbo_vaed.errors import UserError

SCHEMA_ID = "turbovaed.bench/1"
SCHEMA_PATH = Path(__file__).with_name("bench-1.schema.json")


@lru_cache(maxsize=1)
def schema() -> dict:
    """The JSON Schema document (draft 2020-12)."""
    return json.loads(SCHEMA_PATH.read_text())


MAX_RESULTS_BYTES = 16 * 2**20  # a results file of thousands of runs is well below this
MAX_RESULTS_DEPTH = 16  # the schema nests 5 levels


def validate_results(doc: object, source: str = "results") -> dict:
    """Validate a results document; raise a one-line :class:`UserError` naming the first problem.

    Beyond the JSON Schema: no NaN/Infinity anywhere, nesting at most :data:`MAX_RESULTS_DEPTH` levels.
    """
    import jsonschema

    from turbo_vaed.guards import first_nonfinite, json_depth

    if json_depth(doc) > MAX_RESULTS_DEPTH:
        raise UserError(f"{source} is not valid {SCHEMA_ID}: nested more than {MAX_RESULTS_DEPTH} levels deep")
    bad = first_nonfinite(doc)
    if bad is not None:
        raise UserError(f"{source} is not valid {SCHEMA_ID}: at {bad}: NaN/Infinity is not a number")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise UserError(f"{source} is not valid {SCHEMA_ID}: at {where}: {e.message}")
    labels = [r["label"] for r in doc["results"]]  # type: ignore[index]
    if len(set(labels)) != len(labels):
        raise UserError(f"{source} is not valid {SCHEMA_ID}: result labels are not unique: {labels}")
    return doc  # type: ignore[return-value]


def load_results(path: str | Path) -> dict:
    """Read and validate a results JSON file (from turbovaed, ios_bench or android_bench)."""
    from turbo_vaed.guards import read_json

    p = Path(path)
    if not p.is_file():
        raise UserError(f"results file not found: {p}")
    doc = read_json(p, "results file", max_bytes=MAX_RESULTS_BYTES, max_depth=MAX_RESULTS_DEPTH,
                    fix="the run may have been cut off; run the benchmark again", expect=None)
    return validate_results(doc, str(p))
