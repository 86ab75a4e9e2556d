"""Image loading and the training augmentations of the CAL recipe (methods.md §1.3).

Evaluation uses `reid.inference.preprocess_crops`, the single definition of preprocessing, so train,
eval and the runtime see identical inputs; training resizes with the same cv2 call before augmenting.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torchvision.transforms import v2

from reid.inference.base import PreprocessSpec

IGNORE = 255  # mask value where random erasing hid the pixels (reid.datasets.masks.IGNORE)


def read_bgr(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path} (missing or not an image)")
    return img


def read_record(r) -> np.ndarray:
    """A data-set image as BGR, with its camera's colour levelling when the record carries one."""
    img = read_bgr(r.path)
    if r.gains is not None:
        from reid.inference.levelling import apply_lut, gain_lut

        img = apply_lut(img, gain_lut(np.asarray(r.gains, dtype=np.float64)))
    return img


def resize_to_spec(bgr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """BGR uint8 -> HxWx3 uint8 in the spec's channel order, resized like `preprocess_crops`."""
    img = cv2.resize(bgr, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img[..., ::-1]) if spec.colour == "rgb" else img


class _Scale(torch.nn.Module):
    """Multiply by the spec's pixel scale (a module, not a lambda, so worker processes can pickle it)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class CameraJitter(torch.nn.Module):
    """A random camera's colour response on a uint8 CHW image: overall gain, per-channel white balance, gamma.

    Why: every SynthCC people set is seen by a few cameras, and its test people by the same ones; on another set's
    cameras cloth-changing rank-1 halves (README: "Why still-crop figures do not carry to the scenes"). A real site
    has new cameras too. Draws nothing when p is 0, so recipes without it keep their random stream.
    """

    def __init__(self, p: float, gain: float, white_balance: float, gamma: float):
        super().__init__()
        self.p, self.gain, self.white_balance, self.gamma = p, gain, white_balance, gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or torch.rand(1).item() >= self.p:
            return x
        u = torch.rand(5) * 2 - 1  # gain, three channel balances, gamma: each uniform in [-1, 1]
        scale = (1 + self.gain * u[0]) * (1 + self.white_balance * u[1:4])
        y = (x.float() / 255 * scale.view(-1, 1, 1)).clamp(0, 1) ** (1 + self.gamma * u[4])
        return (y * 255).round().to(torch.uint8)


def build_train_transform(spec: PreprocessSpec, random_crop_p: float = 0.5, crop_enlarge: float = 1.125,
                          hflip_p: float = 0.5, erasing_p: float = 0.5,
                          erasing_fill: tuple[float, float, float] = (0.4914, 0.4822, 0.4465),
                          crop_mode: str = "enlarge", crop_pad: int = 10, camera_jitter_p: float = 0.0,
                          camera_gain: float = 0.2, camera_white_balance: float = 0.1,
                          camera_gamma: float = 0.15) -> v2.Compose:
    """uint8 CHW tensor -> normalised float CHW tensor with CAL's augmentations.

    Random crop, `crop_mode` "enlarge" (CAL): enlarge by `crop_enlarge` and crop back at a random offset, with
    probability p. "pad" (FIRe², CSSC): pad `crop_pad` zero pixels on every side, crop back at a random offset.
    Random erasing: area 2-40 %, aspect 0.3-3.3, filled with constants in *normalised* space (CAL's
    quirk; set erasing_fill to 0 for the data-set mean, as the Wang repos do). `camera_jitter_p` > 0 adds
    `CameraJitter` after the flip (none of the papers' recipes has it).
    """
    h, w = spec.height, spec.width
    big = (int(round(h * crop_enlarge)), int(round(w * crop_enlarge)))
    if crop_mode == "enlarge":
        crop = v2.RandomApply([v2.Resize(big, antialias=True), v2.RandomCrop((h, w))], p=random_crop_p)
    elif crop_mode == "pad":
        crop = v2.RandomCrop((h, w), padding=crop_pad, fill=0)
    else:
        raise ValueError(f"crop_mode must be 'enlarge' or 'pad', got {crop_mode!r}")
    ops = [
        crop,
        v2.RandomHorizontalFlip(p=hflip_p),
        *([CameraJitter(camera_jitter_p, camera_gain, camera_white_balance, camera_gamma)] if camera_jitter_p > 0 else []),
        v2.ToDtype(torch.float32, scale=False),
        _Scale(spec.scale),
        v2.Normalize(mean=list(spec.mean), std=list(spec.std)),
    ]
    if erasing_p > 0:
        ops.append(v2.RandomErasing(p=erasing_p, scale=(0.02, 0.4), ratio=(0.3, 1 / 0.3), value=list(erasing_fill)))
    return v2.Compose(ops)


class TrainImages(torch.utils.data.Dataset):
    """Training images as (image tensor, pid, clothes, camid); optionally keeps resized images in memory."""

    def __init__(self, records, spec: PreprocessSpec, transform, cache: bool = False):
        self.records = list(records)
        self.spec = spec
        self.transform = transform
        self.cache: list[np.ndarray] | None = None
        if cache:
            self.cache = [resize_to_spec(read_record(r), spec) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int):
        r = self.records[idx]
        img = self.cache[idx] if self.cache is not None else resize_to_spec(read_record(r), self.spec)
        x = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        return self.transform(x), r.pid, r.clothes, r.camid


class MaskedTrainTransform:
    """`build_train_transform`'s augmentations applied to an image and its part mask together.

    The geometric steps (enlarge-and-crop or pad-and-crop, horizontal flip) run once on both, with the same
    random draws (torchvision's joint Image/Mask transforms: the mask is resized with nearest neighbours and
    padded with 0, background); random erasing draws exactly as `v2.RandomErasing` does and marks the erased
    rectangle IGNORE in the mask. The random stream is the one of `build_train_transform`, so for one seed the
    image equals what the mask-free transform gives.
    """

    def __init__(self, spec: PreprocessSpec, random_crop_p: float = 0.5, crop_enlarge: float = 1.125,
                 hflip_p: float = 0.5, erasing_p: float = 0.5,
                 erasing_fill: tuple[float, float, float] = (0.4914, 0.4822, 0.4465),
                 crop_mode: str = "enlarge", crop_pad: int = 10, **camera: float):
        full = build_train_transform(spec, random_crop_p, crop_enlarge, hflip_p, erasing_p, erasing_fill,
                                     crop_mode, crop_pad, **camera)
        ops = list(full.transforms)  # [crop, flip(, camera jitter), dtype, scale, normalise(, erasing)]
        self.eraser = ops.pop() if isinstance(ops[-1], v2.RandomErasing) else None
        if len(ops) not in (5, 6) or not isinstance(ops[1], v2.RandomHorizontalFlip):
            raise RuntimeError("MaskedTrainTransform expects build_train_transform's order of steps; update both")
        self.geometric = v2.Compose(ops[:2])  # crop, flip
        self.photometric = v2.Compose(ops[2:])  # (camera jitter,) dtype, scale, normalise (image only)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 CHW image, uint8 HW mask -> normalised float CHW image, uint8 HW mask (same geometry)."""
        from torchvision import tv_tensors

        if image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"image {tuple(image.shape[-2:])} and mask {tuple(mask.shape[-2:])} differ in size")
        img, m = self.geometric(tv_tensors.Image(image), tv_tensors.Mask(mask[None]))
        x = self.photometric(img.as_subclass(torch.Tensor))
        m = m.as_subclass(torch.Tensor)[0].clone()
        e = self.eraser
        if e is not None and torch.rand(1) < e.p:  # v2.RandomErasing's order of draws
            params = e.make_params([x])
            if params["v"] is not None:
                i, j, h, w = params["i"], params["j"], params["h"], params["w"]
                x = x.clone()
                x[:, i:i + h, j:j + w] = params["v"]
                m[i:i + h, j:j + w] = IGNORE
        return x, m


class MaskedTrainImages(TrainImages):
    """(image, pid, clothes, camid, mask): the part mask (roles, `reid.datasets.masks`) augmented with the image."""

    def __init__(self, records, spec: PreprocessSpec, transform: MaskedTrainTransform, cache: bool = False,
                 mask_layout: str = "synthcc"):
        super().__init__(records, spec, transform, cache=cache)
        self.mask_layout = mask_layout
        self.mask_cache: list[np.ndarray] | None = None
        if cache:
            self.mask_cache = [self._mask(r) for r in self.records]

    def _mask(self, r) -> np.ndarray:
        from reid.datasets.masks import read_mask

        if not r.mask_path:
            raise FileNotFoundError(f"training image {r.path} has no part mask (set data.masks)")
        m = read_mask(r.mask_path, self.mask_layout)
        if m.shape != (self.spec.height, self.spec.width):
            m = cv2.resize(m, (self.spec.width, self.spec.height), interpolation=cv2.INTER_NEAREST)
        return m

    def __getitem__(self, idx: int):
        r = self.records[idx]
        img = self.cache[idx] if self.cache is not None else resize_to_spec(read_record(r), self.spec)
        m = self.mask_cache[idx] if self.mask_cache is not None else self._mask(r)
        x, mask = self.transform(torch.from_numpy(img).permute(2, 0, 1).contiguous(), torch.from_numpy(m))
        return x, r.pid, r.clothes, r.camid, mask
