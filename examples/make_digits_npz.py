"""Write ``toolkit/data/digits.npz``: scikit-learn's bundled digits with a fixed split.

The file is committed; this script documents (and can re-create) how it was made.  It needs
scikit-learn (the ``train`` extra), nothing is downloaded: the 1797 8×8 images ship inside
scikit-learn.

Contents (all arrays, ``numpy.load(..., allow_pickle=False)`` reads them):

* ``x``: float32, shape (1797, 8, 8, 1), the 0..16 pixel counts divided by 16, so in [0, 1].
  This is the real-valued input domain of the example digits models.
* ``y``: int64, shape (1797,), the digit 0..9.
* ``train_idx`` (1197), ``calib_idx`` (200), ``test_idx`` (400): int64 indices into ``x``/``y``,
  disjoint and together covering every sample, each sorted ascending.  They come from one
  permutation drawn with ``numpy.random.default_rng(SPLIT_SEED)`` (PCG64, stable across numpy
  versions): the first 1197 positions are train, the next 200 calibration, the last 400 test.

The zip archive is written with a fixed timestamp and fixed member order, so re-running the
script with the same scikit-learn data reproduces the file byte for byte.

Usage: ``python examples/make_digits_npz.py [--out toolkit/data/digits.npz]``
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np

SPLIT_SEED = 20240607
N_TRAIN, N_CALIB, N_TEST = 1197, 200, 400
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "toolkit" / "data" / "digits.npz"


def build_arrays() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits  # only needed to re-create the file

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float64)
    if images.shape != (N_TRAIN + N_CALIB + N_TEST, 8, 8) or images.min() < 0 or images.max() > 16:
        raise SystemExit(f"unexpected scikit-learn digits: shape {images.shape}, max {images.max()}")
    x = (images / 16.0).astype(np.float32)[..., np.newaxis]
    y = np.asarray(digits.target, dtype=np.int64)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y)).astype(np.int64)
    return {
        "x": x,
        "y": y,
        "train_idx": np.sort(perm[:N_TRAIN]),
        "calib_idx": np.sort(perm[N_TRAIN : N_TRAIN + N_CALIB]),
        "test_idx": np.sort(perm[N_TRAIN + N_CALIB :]),
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but with a fixed member timestamp (reproducible bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz (default: %(default)s)")
    args = parser.parse_args()
    arrays = build_arrays()
    write_npz(args.out, arrays)
    print(
        f"wrote {args.out} ({args.out.stat().st_size} bytes): "
        + ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in arrays.items())
    )


if __name__ == "__main__":
    main()
