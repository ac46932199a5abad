"""The Python data path a user would otherwise write, for docs/benchmarks.md:
pyarrow reads the shards, PIL decodes, torchvision transforms (Resize 224
bicubic, CenterCrop 224, ToTensor, Normalize with CLIP's mean/std), batched by a
PyTorch DataLoader with worker processes. Prints one JSON line.

    python examples/bench_data_python.py SHARD_DIR --workers 2
"""
import argparse
import glob
import io
import json
import os
import resource
import time

import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import transforms

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


class Shards(IterableDataset):
    def __init__(self, files):
        self.units = [(f, rg) for f in files for rg in range(pq.ParquetFile(f).num_row_groups)]
        self.tf = transforms.Compose(
            [
                transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )

    def __iter__(self):
        info = get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        for f, rg in self.units[wid::n]:
            table = pq.ParquetFile(f).read_row_group(rg, columns=["image"])
            for cell in table.column("image").to_pylist():
                img = Image.open(io.BytesIO(cell["bytes"])).convert("RGB")
                yield self.tf(img)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shards")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = sorted(glob.glob(os.path.join(args.shards, "*.parquet")))
    loader = DataLoader(Shards(files), batch_size=args.batch_size, num_workers=args.workers)

    def cpu_seconds():
        # This process and its finished (joined) children: the DataLoader's workers.
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    cpu0 = cpu_seconds()
    start = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch.shape[0]
    secs = time.perf_counter() - start
    del loader  # the workers have exited once the iterator is exhausted
    cpu = cpu_seconds() - cpu0
    print(json.dumps({
        "images": n, "seconds": secs, "images_per_s": n / secs, "workers": args.workers,
        "cpu_seconds": cpu, "images_per_cpu_s": n / cpu,
    }))


if __name__ == "__main__":
    main()
