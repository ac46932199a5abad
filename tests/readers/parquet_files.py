"""Read Parquet files with pyarrow, the reference reader, and report what it
sees: rows, the Arrow schema, the footer's key-value metadata and the values.

Usage: python parquet_files.py FILE...

Prints one JSON object keyed by file: {"rows", "schema": {column: arrow
type}, "metadata": {key: value}, "columns": {column: values}}; binary values
(and `bytes` inside structs) are given as their SHA-256 in hex.
"""
import hashlib
import json
import sys

import pyarrow.parquet as pq


def plain(value):
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def main(paths):
    out = {}
    for path in paths:
        table = pq.read_table(path)
        meta = pq.read_metadata(path).metadata or {}  # the footer's key-value metadata
        out[path] = {
            "rows": table.num_rows,
            "schema": {f.name: str(f.type) for f in table.schema},
            "metadata": {k.decode(): v.decode() for k, v in meta.items()
                         if not k.startswith(b"ARROW:")},
            "columns": {name: plain(table.column(name).to_pylist())
                        for name in table.column_names},
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
