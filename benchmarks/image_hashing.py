"""Images/s of the catalogue's near-duplicate image hashing (``prodcat catalog build``): worker
processes (``prodcat.catalog.groups.image_hashes``, since stop 49) against the plain loop and
against the four threads it used before, on the same real images, in one run.

Every side hashes the same files, whose bytes are read once before any side is timed (so no side
pays for a cold disk), and the hashes of the three sides must be equal (else it exits with 1).

    python benchmarks/image_hashing.py                    # 12,000 images → benchmarks/image_hashing.json
    python benchmarks/image_hashing.py --n 2000 --repeat 1

Prints one JSON object: seconds and images/s of each side (the best of ``--repeat`` runs) and
the ratios processes / plain and threads / plain.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def threads(uris: list[str], workers: int = 4) -> list[str | None]:
    """The hashing as it was until stop 48: a thread pool (``chunksize`` has no effect there)."""
    from prodcat.catalog.groups import image_hash

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(image_hash, uris))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default=str(REPO.parent / "shared/data/catalogs/*/images/**/*"),
                        help="glob of image files, ** recursive (default: the three real catalogues' images)")
    parser.add_argument("--n", type=int, default=12000, help="images drawn at random (seed 0)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per side; the best is kept")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()

    from prodcat.catalog.groups import image_hash, image_hashes

    files = sorted(f for f in glob.glob(args.images, recursive=True) if os.path.isfile(f))
    if not files:
        parser.error(f"no image matches {args.images}")
    uris = random.Random(0).sample(files, min(args.n, len(files)))
    for uri in uris:  # the page cache holds every file before any side is timed
        Path(uri).read_bytes()
    sides = {"plain": lambda: [image_hash(u) for u in uris],
             "threads4": lambda: threads(uris),
             "processes": lambda: image_hashes(uris)}
    load = os.getloadavg()
    seconds: dict[str, float] = {}
    hashes: dict[str, list] = {}
    for _ in range(args.repeat):
        for name, run in sides.items():
            t0 = time.perf_counter()
            hashes[name] = run()
            seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - t0)
            print(f"[image_hashing] {name}: {seconds[name]:.2f} s", flush=True)
    equal = hashes["plain"] == hashes["threads4"] == hashes["processes"]
    result = {"images": len(uris), "hashed": sum(h is not None for h in hashes["plain"]),
              "cpus": len(os.sched_getaffinity(0)), "load_average_before": load,
              "python": platform.python_version(), "repeat": args.repeat,
              "seconds": {k: round(v, 2) for k, v in seconds.items()},
              "images_per_s": {k: round(len(uris) / v, 1) for k, v in seconds.items()},
              "ratio_processes_over_plain": round(seconds["plain"] / seconds["processes"], 2),
              "ratio_threads4_over_plain": round(seconds["plain"] / seconds["threads4"], 2),
              "hashes_equal": equal}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
