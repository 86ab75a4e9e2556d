"""SCI's image side (methods.md §4): a CLIP ViT image encoder with the semantic-guided interaction module (SIM).

This is the part of SCI that runs at inference and is exported. The text side (text encoder, learnable prompts)
is training-only and lives in `reid.methods.sci`; what inference keeps of it is the frozen bank of orthogonalised
text features of the training identities (`sim.bank`), which SIM attends to (methods.md §4.4).

The encoder is open_clip's `VisionTransformer` (its model definition; no open_clip weights are fetched). Weights
come only from a local CLIP file the user gives (OpenAI or open_clip checkpoint, verified by SHA-256), read by
`read_clip_file`; without one (a tiny configuration for CPU tests) it trains from scratch.

Forward (our reading where the paper is silent, marked [ours]):
  tokens = ViT(x)                                # CLS + patch tokens of the last transformer block
  tokens = SIM(tokens, bank)                     # [ours] SIM on every token of the last block, before ln_post
  cls = ln_post(tokens[:, 0]); proj = cls @ proj # CLIP's pooled feature (width) and its projection (embed_dim)
  output = [cls; proj]                           # as CLIP-ReID, both go to the BN neck [ours for SCI]

SIM (paper Eqs. 12-16; projections and sizes [ours]):
  non-local:  F_con = (theta(F) phi(F)^T / N) g(F);  F_res = W(F_con) + F
  text cross-attention: F_out = F_res + Wo softmax(Wq(F_res) Wk(T)^T / sqrt(d)) Wv(T), T = the text bank
  F_diff = MLP(LayerNorm(F_out));  F_img = F + alpha * F_diff, alpha per channel, initialised at 0 (SIM starts as
  the identity, so stage 1 sees CLIP's own features).
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# OpenAI's released CLIP ViT-B/16 (the SHA-256 is part of OpenAI's download address).
OPENAI_VITB16_SHA256 = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_META_KEYS = ("input_resolution", "context_length", "vocab_size")  # non-tensor entries of OpenAI's files


class ClipWeightsError(ValueError):
    """The CLIP weights file is missing, has another hash, or does not fit the configured encoder."""


# ----------------------------------------------------------------------------------------------- the file

def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_CACHE: dict[tuple[str, str], dict[str, torch.Tensor]] = {}


def read_clip_file(path: str | Path, sha256: str | None) -> dict[str, torch.Tensor]:
    """A local CLIP checkpoint -> its state dict in the OpenAI / open_clip key layout (`visual.*`, `token_embedding.*`,
    `positional_embedding`, `transformer.*`, `ln_final.*`, `text_projection`, `logit_scale`), float32.

    Accepted: OpenAI's TorchScript archives (ViT-B-16.pt), `torch.save`d state dicts (open_clip's
    open_clip_pytorch_model.bin, optionally under "state_dict" with `module.` prefixes) and .safetensors; open_clip's
    custom-text layout (`text.*`) is mapped to the flat one. The file's SHA-256 must equal `sha256`.
    """
    file = Path(path)
    if not file.is_file():
        raise ClipWeightsError(
            f"model.pretrained: CLIP weights file {file} not found; SCI needs a local CLIP checkpoint (for the vitb16 "
            f"recipes OpenAI's ViT-B-16.pt, sha256 {OPENAI_VITB16_SHA256}): put it there or set model.pretrained to "
            "your copy and model.pretrained_sha256 to its hash (nothing is downloaded)")
    if not sha256:
        raise ClipWeightsError(f"model.pretrained_sha256 is not set for the CLIP file {file}; set it to the file's "
                               f"SHA-256 (`sha256sum {file}`) so that a wrong or corrupted file is refused")
    key = (str(file.resolve()), sha256.lower())
    if key in _CACHE:
        return _CACHE[key]
    got = sha256_of(file)
    if got != sha256.lower():
        raise ClipWeightsError(f"model.pretrained: {file} has sha256 {got}, not model.pretrained_sha256 {sha256}; "
                               "give the CLIP file the recipe names, or set model.pretrained_sha256 to this file's hash "
                               "if you mean to use it")
    state = _load_any(file)
    _CACHE.clear()  # one file at a time: the ViT-B/16 state is 600 MB in float32
    _CACHE[key] = state
    return state


def _load_any(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(str(file))
    elif zipfile.is_zipfile(file) and any(n.endswith("/constants.pkl") or n == "constants.pkl"
                                          for n in zipfile.ZipFile(file).namelist()):
        raw = torch.jit.load(str(file), map_location="cpu").state_dict()  # OpenAI's TorchScript archive
    else:
        try:
            raw = torch.load(str(file), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
            raise ClipWeightsError(f"model.pretrained: {file} is not a readable CLIP checkpoint ({exc}); give OpenAI's "
                                   ".pt, open_clip's .bin or a .safetensors state dict") from None
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise ClipWeightsError(f"model.pretrained: {file} holds a {type(raw).__name__}, not a CLIP state dict")
    out: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        if k in _META_KEYS or not torch.is_tensor(v):
            continue
        while k.startswith("module."):
            k = k[len("module."):]
        if k.startswith("text."):  # open_clip's CustomTextCLIP layout
            k = k[len("text."):]
        out[k] = v.float()
    return out


def pick(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_into(module: nn.Module, weights: dict[str, torch.Tensor], prefix: str, file: str, fix: str,
              resize: dict[str, callable] | None = None) -> None:
    """Copy `weights` (keys relative to `module`) into it; any missing, unknown or mis-shaped key is one clear error
    naming the key as the file spells it (prefix + key) and the fix."""
    own = module.state_dict()
    for k, fn in (resize or {}).items():
        if k in weights and k in own and weights[k].shape != own[k].shape:
            weights = {**weights, k: fn(weights[k], own[k].shape)}
    missing = [k for k in own if k not in weights]
    if missing:
        raise ClipWeightsError(f"model.pretrained: {file} lacks {prefix}{missing[0]} ({len(missing)} missing keys); "
                               f"{fix}")
    unknown = [k for k in weights if k not in own]
    if unknown:
        raise ClipWeightsError(f"model.pretrained: {file} has {prefix}{unknown[0]}, which this encoder has no place for "
                               f"({len(unknown)} unknown keys); {fix}")
    for k, v in own.items():
        if weights[k].shape != v.shape:
            raise ClipWeightsError(f"model.pretrained: {file}: {prefix}{k} has shape {list(weights[k].shape)}, the "
                                   f"configured encoder {list(v.shape)}; {fix}")
    module.load_state_dict(weights, strict=True)


def resize_grid_embedding(src: torch.Tensor, shape: torch.Size, grid: tuple[int, int]) -> torch.Tensor:
    """[1 + g*g, C] positional embedding of a square pre-training grid -> [1 + gh*gw, C] (bilinear), as CLIP-ReID
    adapts CLIP's 14x14 grid to 384x192 inputs (24x12)."""
    n, c = src.shape
    side = int(round(math.sqrt(n - 1)))
    if side * side != n - 1 or shape[1] != c:
        return src  # reported as a shape mismatch by load_into
    cls, grid_part = src[:1], src[1:].reshape(1, side, side, c).permute(0, 3, 1, 2)
    grid_part = F.interpolate(grid_part, size=grid, mode="bilinear", align_corners=False)
    return torch.cat([cls, grid_part.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], c)])


# ----------------------------------------------------------------------------------------------- SIM

class SIM(nn.Module):
    """Semantic-guided interaction module over a token sequence (B, N, C) and a text bank (K, D)."""

    def __init__(self, width: int, text_dim: int, bank_size: int, dim: int = 0, hidden: int = 0):
        super().__init__()
        dim = dim or text_dim
        inner = max(1, width // 2)  # the non-local block's usual halving [ours]
        self.theta, self.phi, self.g = nn.Linear(width, inner), nn.Linear(width, inner), nn.Linear(width, inner)
        self.w = nn.Linear(inner, width)
        self.q, self.k, self.v = nn.Linear(width, dim), nn.Linear(text_dim, dim), nn.Linear(text_dim, dim)
        self.o = nn.Linear(dim, width)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden or width), nn.GELU(), nn.Linear(hidden or width, width))
        self.alpha = nn.Parameter(torch.zeros(width))  # SIM starts as the identity
        # the orthogonalised text features of the training identities, written once after stage 1, then frozen
        self.register_buffer("bank", torch.zeros(bank_size, text_dim))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        con = torch.bmm(torch.bmm(self.theta(x), self.phi(x).transpose(1, 2)) / n, self.g(x))
        res = self.w(con) + x
        attn = torch.softmax(self.q(res) @ self.k(self.bank).t() * self.scale, dim=-1)
        out = res + self.o(attn @ self.v(self.bank))
        return x + self.alpha * self.mlp(self.norm(out))


# ----------------------------------------------------------------------------------------------- encoder

class ClipImageEncoder(nn.Module):
    """CLIP ViT (open_clip's VisionTransformer) + optional SIM; forward -> [cls (width); proj (embed_dim)]."""

    def __init__(self, arch):
        super().__init__()
        from open_clip.transformer import QuickGELU, VisionTransformer

        state = read_clip_file(arch.pretrained, arch.pretrained_sha256) if arch.pretrained else None  # fail early
        h, w = arch.clip_image_size
        p = arch.clip_patch
        if h % p or w % p:
            raise ValueError(f"the input size {h}x{w} must be a multiple of model.clip_patch {p} (data.height/width)")
        self.visual = VisionTransformer(
            image_size=(h, w), patch_size=p, width=arch.clip_width, layers=arch.clip_layers, heads=arch.clip_heads,
            mlp_ratio=4.0, output_dim=arch.clip_embed_dim, act_layer=QuickGELU if arch.clip_quick_gelu else nn.GELU)
        self.grid = (h // p, w // p)
        self.width, self.embed_dim = arch.clip_width, arch.clip_embed_dim
        self.out_dim = self.width + self.embed_dim
        self.sim = SIM(self.width, self.embed_dim, arch.sim_bank, arch.sim_dim, arch.sim_hidden) \
            if arch.sim and arch.sim_bank else None
        if state is not None:
            self.load_clip(arch.pretrained, state)

    def load_clip(self, path: str, state: dict[str, torch.Tensor]) -> None:
        visual = pick(state, "visual.")
        if not visual:
            raise ClipWeightsError(f"model.pretrained: {path} has no visual.* tensors (e.g. visual.conv1.weight); "
                                   "give a full CLIP checkpoint in the OpenAI / open_clip layout")
        if "visual.conv1.weight" not in state or "visual.proj" not in state:
            raise ClipWeightsError(f"model.pretrained: {path} lacks visual.conv1.weight / visual.proj: not a CLIP ViT "
                                   "(SCI's image side here is the ViT; a ResNet CLIP is not supported)")
        fix = ("set model.clip_width / clip_layers / clip_heads / clip_patch / clip_embed_dim to the file's "
               "architecture (ViT-B/16: 768 / 12 / 12 / 16 / 512) or give the CLIP file the recipe was written for")
        load_into(self.visual, visual, "visual.", path, fix,
                  resize={"positional_embedding": lambda t, s: resize_grid_embedding(t, s, self.grid)})

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(x).flatten(2).transpose(1, 2)  # (B, gh*gw, width)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.transformer(v.ln_pre(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(x)
        if self.sim is not None:
            t = self.sim(t)
        cls = self.visual.ln_post(t[:, 0])
        return torch.cat([cls, cls @ self.visual.proj], dim=1)
