#!/usr/bin/env python3
"""Draws Fashion-MNIST queries beside their hard negatives, as one PNG.

    /usr/bin/python3 scripts/demo_picture.py --negatives NEG.json --out P.png \\
        [--rows 6] [--per_row 5] [--dataset_dir /usr/share/datasets/fashion-mnist]

NEG.json is `hardneg mine --output NEG.json` for queries exported by
`hardneg make-checkpoint --export_queries`: query i is test image i. The
negatives' ids are training-image indexes (a `--fashion_mnist --split train`
checkpoint); a negative whose label is not its training image's class is
refused. Each row is a query (the first one of each new class, up to --rows
rows) then its first --per_row negatives, captioned with class and score.
The size is fixed: image_size(rows, per_row) pixels, independent of content.
"""

import argparse
import gzip
import json
import os
import sys
from typing import Any, Dict, List, Tuple

import numpy as np

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DPI = 100
TILE_W, TILE_H = 128, 156  # pixels per tile: a 112 x 112 image, 2 caption lines
IMAGE_PX = 112
GAP = 16                   # between the query column and its negatives
HEADER = 28                # the title band


def image_size(rows: int, per_row: int) -> Tuple[int, int]:
    """(width, height) in pixels of a picture of rows x (1 + per_row) tiles."""
    return (1 + per_row) * TILE_W + GAP, HEADER + rows * TILE_H


def read_idx(path: str, magic: int) -> np.ndarray:
    """An IDX file (gzip'd): uint8 [n] labels (magic 2049) or [n, 28, 28] images."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    head = np.frombuffer(data, dtype=">u4", count=1 + ndim)
    if int(head[0]) != magic:
        raise ValueError(f"{path}: not an IDX file of magic {magic}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 * (1 + ndim)).reshape(
        [int(d) for d in head[1:]])


def pick_rows(results: List[Dict[str, Any]], test_labels: np.ndarray,
              rows: int) -> List[Dict[str, Any]]:
    """The first query of each new class, up to `rows` of them."""
    picked: List[Dict[str, Any]] = []
    seen = set()
    for r in results:
        label = int(test_labels[r["query"]])
        if label not in seen:
            seen.add(label)
            picked.append(r)
        if len(picked) == rows:
            return picked
    raise ValueError(f"only {len(picked)} queries of distinct classes in the "
                     f"results, {rows} rows asked")


def draw(args: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(args.negatives) as f:
        results = json.load(f)["results"]
    d = args.dataset_dir
    test_images = read_idx(os.path.join(d, "t10k-images-idx3-ubyte.gz"), 2051)
    test_labels = read_idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz"), 2049)
    train_images = read_idx(os.path.join(d, "train-images-idx3-ubyte.gz"), 2051)
    train_labels = read_idx(os.path.join(d, "train-labels-idx1-ubyte.gz"), 2049)

    width, height = image_size(args.rows, args.per_row)
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    fig.text(0.5, 1 - 14 / height, "Fashion-MNIST: test queries (left) and their "
             "hard negatives among the training images",
             ha="center", va="center", fontsize=min(9.0, 9.0 * width / 660),
             weight="bold")

    def tile(row: int, col: int, image: np.ndarray, top: str, bottom: str,
             color: str) -> None:
        x = col * TILE_W + (GAP if col else 0) + (TILE_W - IMAGE_PX) / 2
        y = height - HEADER - (row + 1) * TILE_H + (TILE_H - IMAGE_PX - 4)
        ax = fig.add_axes((x / width, y / height, IMAGE_PX / width, IMAGE_PX / height))
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color(color)
            spine.set_linewidth(2 if col == 0 else 0.5)
        ax.set_title(top, fontsize=8, color=color, pad=3)
        ax.text(0.5, -0.03, bottom, transform=ax.transAxes, ha="center", va="top",
                fontsize=8, color=color)

    for row, r in enumerate(pick_rows(results, test_labels, args.rows)):
        q = int(r["query"])
        tile(row, 0, test_images[q], f"query: {CLASSES[test_labels[q]]}",
             f"test image {q}", "tab:blue")
        negatives = r["negatives"]
        if len(negatives) < args.per_row:
            raise ValueError(f"query {q}: {len(negatives)} negatives, "
                             f"{args.per_row} asked")
        for col, n in enumerate(negatives[:args.per_row], start=1):
            i, label = int(n["id"]), int(n["label"])
            if not 0 <= i < len(train_labels) or train_labels[i] != label:
                raise ValueError(f"negative id {i} (label {label}) is not a "
                                 "Fashion-MNIST training image of that class: "
                                 "mine a `--fashion_mnist --split train` checkpoint")
            tile(row, col, train_images[i], CLASSES[label], f"score {n['score']:.3f}",
                 "black")
    fig.savefig(args.out, dpi=DPI)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--negatives", required=True, help="hardneg mine --output's JSON")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--rows", type=int, default=6, help="queries (distinct classes)")
    ap.add_argument("--per_row", type=int, default=5, help="negatives per query")
    ap.add_argument("--dataset_dir", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    if not 1 <= args.rows <= len(CLASSES) or args.per_row < 1:
        ap.error(f"--rows must be in 1..{len(CLASSES)}, --per_row at least 1")
    files = [os.path.join(args.dataset_dir, f"{split}-{kind}-idx{n}-ubyte.gz")
             for split in ("t10k", "train") for kind, n in (("images", 3), ("labels", 1))]
    for path in files:
        if not os.path.isfile(path):
            print(f"demo_picture.py: no Fashion-MNIST file {path} (install Debian's "
                  "dataset-fashion-mnist, or pass --dataset_dir)", file=sys.stderr)
            return 1
    if not os.path.isfile(args.negatives):
        print(f"demo_picture.py: no negatives file {args.negatives} (write it with "
              "`hardneg mine ... --output FILE.json`)", file=sys.stderr)
        return 1
    try:
        draw(args)
    except (OSError, ValueError) as e:
        print(f"demo_picture.py: {e}", file=sys.stderr)
        return 1
    except (KeyError, TypeError, IndexError) as e:
        print(f"demo_picture.py: {args.negatives}: not `hardneg mine` JSON of "
              f"Fashion-MNIST test queries ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
