"""Prepare what a lent GPU machine needs for the GPU benchmarks, and print the device commands.

``benchmarks/embed_gpu.py``, ``benchmarks/gpu_extras.py`` and ``benchmarks/finetune_gpu.py`` run
there as they are, in one device call (``ALL_COMMAND``).

The lent machine (DESIGN.md, "Measuring on a lent GPU") has Python 3.12, torch, transformers,
timm, pyarrow and nvidia-ml-py, but no Ray, pydantic or open_clip, no network, and takes 64 MiB of
working tree. This script, run here (it needs pip's network access once):

- downloads cp312 wheels of what is missing into ``.whl/`` (versions of this environment), and
  strips Ray's wheel of what the benchmark never loads (``ray/jars``, the dashboard's web build,
  RLlib, ``ray/llm``, ``ray/cpp``) and recompresses it with LZMA: 79 → ~31 MB;
- copies the sample catalogue into ``.gpu-data/``: ``products.parquet`` with image paths relative
  to it, the images packed as ``images.tar.gz`` (9.2 MiB for the 2,914 images of the 2,937
  sample products; the device command unpacks it) and ``taxonomy.json``;
- checks that the working tree plus both folders stay under 64 MiB on disk, and prints the
  command.

    python benchmarks/prepare_gpu_run.py                     # runs/sample/catalog of this checkout
    python benchmarks/prepare_gpu_run.py --catalog /work/main/runs/sample/catalog --skip-wheels

Both folders are git-ignored; the device tool's ``carry`` names them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIMIT_MIB = 64

#: what the device lacks (DESIGN.md and the device's package list): Ray and its non-present
#: requirements, pydantic, open_clip, and what Serve imports there
WHEELS = ["ray", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
          "typing-extensions", "open_clip_torch", "ftfy", "wcwidth", "jsonschema",
          "jsonschema-specifications", "referencing", "rpds-py",
          "fastapi", "starlette", "uvicorn", "annotated-doc", "opentelemetry-api",
          "opencensus", "opencensus-context", "watchfiles"]
RAY_STRIP = ("ray/jars/", "ray/dashboard/client/build/", "ray/rllib/", "ray/llm/", "ray/cpp/")
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]

SETUP = (
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
    "--target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; "
    "export RAY_USAGE_STATS_ENABLED=0 RAY_DATA_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1 "
    "TMPDIR=/tmp/r; mkdir -p $TMPDIR; tar -xf .gpu-data/images.tar.gz -C .gpu-data || exit; "
    "set -o pipefail; ")
#: ends what a benchmark stopped by its timeout left running (Ray's processes hold the GPU)
CLEAN = "pkill -9 -f '[r]aylet|[g]cs_server|[r]ay::|[d]ashboard/' ; sleep 1; "  # [r]: not this shell
#: GPU name, driver and library versions, first lines of the call's one log ($L)
VERSIONS = (
    "(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "
    "'import torch,transformers,timm,pyarrow,ray;print(torch.__version__,transformers.__version__,"
    "timm.__version__,pyarrow.__version__,ray.__version__)') 2>&1 | tee $OUT/device.log; "
    "L=$OUT/device.log; ")
#: each benchmark's command line after ``python3 benchmarks/`` (without ``--out``)
BENCHMARKS = {
    "embed": "embed_gpu.py --products .gpu-data/products.parquet --models-from /tmp/models",
    "extras": "gpu_extras.py --products .gpu-data/products.parquet --models /tmp/models",
    "finetune": "finetune_gpu.py --products .gpu-data/products.parquet --models /tmp/models"}


def step(name: str, limit: int | str) -> str:
    """One benchmark of :data:`BENCHMARKS` under ``timeout limit`` (seconds, or a shell
    expression such as ``$((520-SECONDS))``), its output appended to the log, then :data:`CLEAN`.
    ``SETUP + VERSIONS + step("finetune", 170)`` was the second, shorter call of 2026-12-04."""
    return (f"timeout {limit} python3 benchmarks/{BENCHMARKS[name]} --out $OUT 2>&1 | tee -a $L | "
            "grep -v 'core_worker\\|issue_detector'; " + CLEAN)


#: the one call that fits a session's 15 device minutes with the machine's start (timeout_s
#: 600): versions, the embedding benchmark (up to 320 s), train + serve (until 520 s) and the
#: fine-tuning benchmark (until 590 s), one log
ALL_COMMAND = (SETUP + VERSIONS + step("embed", 320) + step("extras", "$((520-SECONDS))")
               + step("finetune", "$((590-SECONDS))") + "ls -la $OUT")


def download(names: list[str], dest: Path) -> None:
    """``pip download`` each name at this environment's version, cp312 manylinux wheels only."""
    dest.mkdir(exist_ok=True)
    pins = [f"{n}=={metadata.version(n)}" for n in names]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "-d", str(dest), "-q"]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    subprocess.run(cmd + pins, check=True)


def strip_ray(dest: Path) -> None:
    """Rewrite Ray's wheel without :data:`RAY_STRIP` (RECORD rewritten to match), LZMA-compressed
    (30 MiB instead of 40; pip reads it, and each entry keeps its mode, so the raylet stays
    executable; about a minute here)."""
    for wheel in dest.glob("ray-*.whl"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / wheel.name
            with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_LZMA) as dst:
                for item in src.infolist():
                    if item.filename.startswith(RAY_STRIP):
                        continue
                    data = src.read(item.filename)
                    if item.filename.count("/") == 1 and item.filename.endswith(".dist-info/RECORD"):
                        data = b"\n".join(line for line in data.splitlines()
                                          if not line.decode().startswith(RAY_STRIP)) + b"\n"
                    dst.writestr(item, data, compress_type=zipfile.ZIP_LZMA)
            shutil.move(out, wheel)


def copy_catalog(catalog: Path, dest: Path) -> int:
    """The product table with image paths relative to ``dest``, its images and taxonomy.json;
    returns the number of images copied."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if dest.exists():
        shutil.rmtree(dest)
    (dest / "images").mkdir(parents=True)
    table = pq.read_table(catalog / "products.parquet")
    uris, copied = [], 0
    for uri in table["image_uri"].to_pylist():
        if not uri or not Path(uri).is_file():
            uris.append(uri)
            continue
        target = Path("images") / Path(uri).parent.parent.name / Path(uri).name
        (dest / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(uri, dest / target)
        uris.append(str(target))
        copied += 1
    table = table.set_column(table.schema.get_field_index("image_uri"), "image_uri",
                             pa.array(uris, pa.string()))
    pq.write_table(table, dest / "products.parquet")
    if (catalog / "taxonomy.json").is_file():
        shutil.copyfile(catalog / "taxonomy.json", dest / "taxonomy.json")
    return copied


def pack_images(dest: Path) -> None:
    """``dest/images/`` → ``dest/images.tar.gz``, which the device command unpacks. The device
    tool counts the space files take on disk, so thousands of small images cost more than their
    bytes; gzip also removes tar's 512-byte padding."""
    import tarfile

    with tarfile.open(dest / "images.tar.gz", "w:gz") as tar:
        tar.add(dest / "images", arcname="images")
    shutil.rmtree(dest / "images")


def size_mib(*paths: Path) -> float:
    """Space on disk (blocks, as ``du``): what the device tool counted on 2026-12-04 (63.4 MiB of
    bytes, 70 on disk, was refused)."""
    return sum(f.stat().st_blocks * 512 for p in paths for f in (p.rglob("*") if p.is_dir() else [p])
               if f.is_file()) / 2**20


def tree_mib() -> float:
    """Tracked and untracked-not-ignored files: what the device tool sends besides carry."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    return sum((REPO / f).stat().st_blocks * 512 for f in files if (REPO / f).is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default=str(REPO / "runs/sample/catalog"),
                        help="catalogue folder with products.parquet (absolute image_uri paths) and "
                        "taxonomy.json; default the main job's sample (bash scripts/main.sh)")
    parser.add_argument("--wheels", default=str(REPO / ".whl"))
    parser.add_argument("--data", default=str(REPO / ".gpu-data"))
    parser.add_argument("--skip-wheels", action="store_true", help="keep .whl/ as it is")
    args = parser.parse_args(argv)
    wheels, data = Path(args.wheels), Path(args.data)
    if not args.skip_wheels:
        download(WHEELS, wheels)
        strip_ray(wheels)
    copied = copy_catalog(Path(args.catalog), data)
    pack_images(data)
    total = tree_mib() + size_mib(wheels, data)
    print(f"wheels {size_mib(wheels):.1f} MiB ({len(list(wheels.glob('*.whl')))} files), data "
          f"{size_mib(data):.1f} MiB ({copied} images), working tree {tree_mib():.1f} MiB: "
          f"{total:.1f} of {LIMIT_MIB} MiB")
    if total > LIMIT_MIB:
        print("too large for the device tool: use fewer products (--catalog of a smaller table)")
        return 1
    print("\none device call (carry: .whl, .gpu-data; timeout_s 600):\n" + ALL_COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
