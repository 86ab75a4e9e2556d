"""Contact sheet: one identity, rows = outfits, columns = cameras."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from .io import write_png

_NAME = re.compile(r"^(\d+)_(\d+)_c(\d+)_(\d+)\.png$")
# Label colours (BGR) for mask previews.
_LABEL_BGR = np.array(
    [[0, 0, 0], [140, 180, 230], [30, 60, 120], [60, 60, 220], [200, 120, 40], [40, 200, 40], [200, 60, 200]],
    np.uint8,
)


def contact_sheet(root: Path, pid: int, out: Path, per_cell: int = 2, masks: bool = False) -> Path:
    files: dict[tuple[int, int], list[Path]] = {}
    for split in ("train", "query", "test"):
        d = root / split
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            m = _NAME.match(f.name)
            if m and int(m.group(1)) == pid:
                files.setdefault((int(m.group(2)), int(m.group(3))), []).append(f)
    if not files:
        raise FileNotFoundError(f"no images of pid {pid} under {root}/{{train,query,test}} (names PPPP_CC_cNN_IIIIII.png)")
    outfits = sorted({k[0] for k in files})
    cams = sorted({k[1] for k in files})
    sample = cv2.imread(str(next(iter(files.values()))[0]))
    h, w = sample.shape[:2]
    tile_w = w * (2 if masks else 1)
    pad, head = 4, 18
    sheet = np.full((head + len(outfits) * (h + pad) + pad, 70 + len(cams) * (per_cell * (tile_w + pad) + 2 * pad), 3), 245, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for j, cam in enumerate(cams):
        x = 70 + j * (per_cell * (tile_w + pad) + 2 * pad)
        cv2.putText(sheet, f"cam {cam}", (x, 13), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for i, oc in enumerate(outfits):
        y = head + i * (h + pad)
        cv2.putText(sheet, f"outfit {oc}", (4, y + h // 2), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        for j, cam in enumerate(cams):
            x = 70 + j * (per_cell * (tile_w + pad) + 2 * pad)
            for k, f in enumerate(files.get((oc, cam), [])[:per_cell]):
                img = cv2.imread(str(f))
                if img is None or img.shape[:2] != (h, w):
                    raise ValueError(f"{f}: unreadable or not {h}x{w}")
                xx = x + k * (tile_w + pad)
                sheet[y : y + h, xx : xx + w] = img
                if masks:
                    mf = f.parent.parent / "masks" / f.parent.name / f.name
                    lab = cv2.imread(str(mf), cv2.IMREAD_UNCHANGED)
                    if lab is None:
                        raise FileNotFoundError(f"mask {mf} missing")
                    sheet[y : y + h, xx + w : xx + 2 * w] = _LABEL_BGR[np.clip(lab, 0, 6)]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, sheet)
    return out
