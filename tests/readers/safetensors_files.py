"""Load safetensors files with the safetensors library, the reference reader
(both `safetensors.torch.load_file` and `safe_open`), and report every tensor.

Usage: python safetensors_files.py FILE...

Prints one JSON object keyed by file: {"metadata": header metadata or null,
"tensors": {name: {"dtype", "shape", "sha256"}}} where sha256 is over the
values converted to float64, little-endian, in row-major order — so a reader
in another language can check every value bit for bit.
"""
import hashlib
import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file


def main(paths):
    out = {}
    for path in paths:
        loaded = load_file(path)
        with safe_open(path, framework="pt") as f:
            assert sorted(f.keys()) == sorted(loaded), "safe_open and load_file disagree"
            metadata = f.metadata()
            for name in f.keys():
                assert torch.equal(f.get_tensor(name), loaded[name]), name
        tensors = {}
        for name, t in loaded.items():
            values = t.detach().to(torch.float64).contiguous().numpy()
            tensors[name] = {
                "dtype": str(t.dtype).removeprefix("torch."),
                "shape": list(t.shape),
                "sha256": hashlib.sha256(values.astype("<f8").tobytes()).hexdigest(),
            }
        out[path] = {"metadata": metadata, "tensors": tensors}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
