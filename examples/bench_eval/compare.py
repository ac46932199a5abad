"""Compares the toolkit's output (toolkit_eval.py) with `dicoflow eval --json`
(and optionally their per-image files) value by value; exits 1 on any
difference above TOL (default 0, i.e. bit-identical).

    python3 examples/bench_eval/compare.py TOOLKIT.json RUST.json [TOOLKIT_PI.json RUST_PI.json] [--tol X]
"""
import json
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--tol")]
tol = float(sys.argv[sys.argv.index("--tol") + 1]) if "--tol" in sys.argv else 0.0
if "--tol" in sys.argv:
    args.remove(sys.argv[sys.argv.index("--tol") + 1])
tk = {k: float(v) for k, v in json.load(open(args[0])).items()}
rs = json.load(open(args[1]))
worst, n = 0.0, 0
for k, v in tk.items():
    worst, n = max(worst, abs(v - rs[k])), n + 1
if len(args) > 3:
    tpi = json.load(open(args[2]))
    rpi = json.load(open(args[3]))
    assert [r["image_id"] for r in tpi] == [r["image_id"] for r in rpi], "image order differs"
    close = {}
    for a, b in zip(tpi, rpi):
        for k, v in a.items():
            if k != "image_id":
                d = abs(float(v) - b[k])
                worst, n = max(worst, d), n + 1
                close[k] = close.get(k, 0) + (d <= 1e-6)
    for k, c in close.items():
        print(f"{k}: {c} of {len(tpi)} images within 1e-6")
print(f"compared {n} values; largest absolute difference {worst!r}")
sys.exit(0 if worst <= tol else 1)
