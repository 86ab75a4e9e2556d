"""Training recipe schema (YAML). Unknown keys are errors, with the key path in the message."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reid.models.arch import ArchConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExtraTrainData(_Strict):
    dataset: str
    root: str
    # True: this set's training images have no part masks (e.g. `synth crops` of scene videos); CRE erases
    # nothing in them and BSGA gives them no weight, while every other loss trains on them as usual.
    unmasked: bool = False


class DataConfig(_Strict):
    dataset: str
    root: str
    height: int = Field(384, gt=0)
    width: int = Field(192, gt=0)
    batch_size: int = Field(64, gt=0, description="P x K images per step")
    num_instances: int = Field(8, ge=2, description="K: images per identity in a batch")
    num_workers: int = Field(4, ge=0)
    cache_images: bool = False  # keep resized training images in memory (small data sets, CPU runs)
    # Input normalisation (after scaling pixels to [0, 1]); null: ImageNet's. SCI's recipes give CLIP's.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # Per-image part masks (CRE and BSGA need them for the training images). SynthCC ships its own (masks/);
    # for a real data set, `masks` is a folder of human-parsing maps that mirrors the data-set folder (same
    # relative path, .png), read in `mask_layout`: "lip" (20 LIP classes, SCHP's LIP model), "atr" (18 ATR
    # classes) or "synthcc" (SynthCC's roles). reid/datasets/masks.py maps each to the same roles.
    masks: str | None = None
    mask_layout: Literal["synthcc", "lip", "atr"] = "synthcc"
    # "pk": P identities x K images (reid/samplers.py); "outfits": the same, but each identity's K images span
    # at least `outfits_per_identity` of its outfits whenever it has that many (needs clothes labels).
    sampler: Literal["pk", "outfits"] = "pk"
    outfits_per_identity: int = Field(2, ge=2, description="outfits sampler: distinct outfits in each identity's "
                                                            "K images (at most K)")
    # More training images from other data sets: [{dataset, root}], their people and outfits added to the
    # training set's as people of their own (relabelled after it); evaluation stays on `root`'s test split.
    extra_train: list[ExtraTrainData] = []
    # Level each camera's colour (grey world) in training, and store the reference in the model's spec so that
    # evaluation and the pipeline level every camera to it (reid/inference/levelling.py). `true` or "centre": over
    # the boxes' centres; "person": over person pixels (the set's masks; the pipeline finds them against each
    # camera's learnt background).
    colour_levelling: bool | Literal["centre", "person"] = False

    @model_validator(mode="after")
    def _pk(self):
        if self.batch_size % self.num_instances:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of num_instances {self.num_instances}")
        if self.sampler == "outfits" and self.outfits_per_identity > self.num_instances:
            raise ValueError(f"outfits_per_identity {self.outfits_per_identity} cannot exceed num_instances "
                             f"{self.num_instances} (K images per identity)")
        return self


class AugmentConfig(_Strict):
    random_crop_p: float = Field(0.5, ge=0, le=1)
    # "enlarge": CAL's resize by crop_enlarge and crop back (with random_crop_p); "pad": the Wang repos' (FIRe²,
    # CSSC) zero-pad by crop_pad pixels on every side and crop back at a random offset (always).
    crop_mode: Literal["enlarge", "pad"] = "enlarge"
    crop_enlarge: float = Field(1.125, ge=1)
    crop_pad: int = Field(10, ge=0)
    hflip_p: float = Field(0.5, ge=0, le=1)
    erasing_p: float = Field(0.5, ge=0, le=1)
    erasing_fill: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    # A random camera's colour response (reid.transforms.CameraJitter): 0 = off, as in every paper's recipe.
    camera_jitter_p: float = Field(0.0, ge=0, le=1, description="probability of a random gain, white balance and "
                                   "gamma per training image")
    camera_gain: float = Field(0.2, ge=0, lt=1, description="overall gain drawn in 1 ± this")
    camera_white_balance: float = Field(0.1, ge=0, lt=1, description="each channel's gain drawn in 1 ± this")
    camera_gamma: float = Field(0.15, ge=0, lt=1, description="gamma drawn in 1 ± this")


class Fire2Config(_Strict):
    """FIRe² (methods.md §3): per-identity clustering (FFM) and attribute recomposition (FAR)."""

    start_epoch: int = Field(25, ge=0, description="0-based epoch from which clustering, L_FFM and L_FAR run "
                                                   "(re-clustered at the start of every epoch from then on)")
    eps: float = Field(0.4, gt=0, description="DBSCAN radius on the Jaccard distance")
    min_samples: int = Field(1, ge=1, description="DBSCAN min_samples (1: clusters = connected components)")
    k1: int = Field(20, ge=2, description="k-reciprocal neighbourhood: nearest images, the image itself included")
    k2: int = Field(6, ge=1, description="query-expansion neighbours, the image itself included (scaled with k1)")
    k1_fraction: float = Field(1.0, gt=0, le=1, description="1.0: the authors' rule, k1 = min(k1, n); below 1 "
                                                            "also caps k1 at this share of an identity's n images")
    scale: float = Field(16.0, gt=0, description="cosine scale of the fine-grained classifier")
    epsilon: float = Field(0.1, ge=0, lt=1, description="target mass spread over the identity's clusters")
    ffm_weight: float = Field(1.0, ge=0)
    far_weight: float = Field(0.3, ge=0, description="lambda of L_FAR; 0 disables FAR (and its head)")
    far_parts: int = Field(2, ge=1, description="horizontal parts whose statistics are swapped")
    reset_optimizer: bool = Field(True, description="re-create the main Adam at every clustering epoch "
                                                    "(as the authors' code)")
    feature_batch_size: int = Field(128, gt=0)


class CsscConfig(_Strict):
    """CSSC (methods.md §2): SMR's training heads; the trunk itself is model.trunk: cssc."""

    stripes: int = Field(8, ge=1, description="horizontal stripes of SMR's local mining (the authors: 8)")
    local_dim: int = Field(256, ge=1, description="width of each stripe's Linear + BN (the authors: 256)")
    smr_weight: float = Field(1.0, ge=0, description="weight of every SMR module's identity and triplet terms "
                                                     "(the paper: 1)")


class SciConfig(_Strict):
    """SCI (methods.md §4): dual learnable prompts (SSE) and their text encoder; the image side is model.backbone
    clip_vit (with model.sim). Values the paper does not give are CLIP-ReID's or ours (reid/README.md, "SCI")."""

    prompt_tokens: int = Field(4, ge=1, description="M learnable tokens per prompt (not in the paper; CLIP-ReID: 4)")
    id_template: str = Field("A photo of a X X X X person.", description="X marks the learnable tokens")
    clothes_template: str = Field("A photo of the X X X X clothes.")
    projection: Literal["gram_schmidt", "printed"] = Field(
        "gram_schmidt", description="F_ort = F_id - <F_id,F_clo>/|F_clo|^2 F_clo (ours, see README), or Eqs. 4-5 as "
                                    "printed (F_id - <F_clo,F_id>/|F_id|^2 F_id: a rescaled F_id)")
    lambda_id: float = Field(1.0, ge=0, description="lambda_1 of L_sim: weight of 1 - cos(F_ort, F_id)")
    lambda_clo: float = Field(1.0, ge=0, description="lambda_2 of L_sim: weight of cos(F_ort, F_clo)")
    stage1_epochs: int = Field(120, ge=0, description="prompt-learning epochs before stage 2 (paper: 120 ViT)")
    stage1_lr: float = Field(3.5e-4, gt=0)
    stage1_weight_decay: float = Field(1e-4, ge=0)
    stage1_batch_size: int = Field(64, gt=0)
    i2t_weight: float = Field(1.0, ge=0, description="weight of stage 2's L_i2tce")
    logit_scale: float | None = Field(None, gt=0, description="similarity scale of the image-text terms; null: "
                                                                  "exp(logit_scale) of the CLIP file, else 1/0.07")
    # the text tower (open_clip TextTransformer); defaults are CLIP ViT-B/16's
    text_width: int = Field(512, ge=1)
    text_layers: int = Field(12, ge=1)
    text_heads: int = Field(8, ge=1)
    context_length: int = Field(77, ge=8)
    vocab_size: int = Field(49408, ge=1)


class CreBsgaConfig(_Strict):
    """Mu et al. (methods.md §5; our reading, §5.2): clothes-region erasing (CRE), the body-shape-guided
    attention's supervision (BSGA; the attention itself is model.bsga) and the batch cross-clothes triplet."""

    cre_p: float = Field(0.5, ge=0, le=1, description="probability that a training image has its clothes erased "
                                                      "(0: CRE off)")
    cre_fill: Literal["mean", "random"] = Field("mean", description="mean: the normalisation mean (0 after "
                                                                     "normalising); random: uniform random pixels")
    cre_start_epoch: int = Field(0, ge=0, description="0-based epoch from which CRE runs")
    cre_end_epoch: int | None = Field(None, ge=1, description="0-based epoch at which CRE stops (None: never)")
    cre_labels: list[int] = Field([3, 4, 5, 6], min_length=1, description="mask roles erased (top, bottom, "
                                                                           "shoes, outerwear/bag)")
    body_labels: list[int] = Field([1, 2, 3, 4, 5, 6], min_length=1, description="mask roles that make the "
                                                                                 "body shape BSGA's attention learns")
    bsga_weight: float = Field(1.0, ge=0, description="weight of the attention's mask loss (needs model.bsga)")
    xtri_weight: float = Field(1.0, ge=0, description="weight of the batch cross-clothes triplet (0: off)")
    xtri_margin: float = Field(0.3, ge=0)
    xtri_start_epoch: int = Field(0, ge=0, description="0-based epoch from which the cross-clothes triplet runs")

    @model_validator(mode="after")
    def _window(self):
        if self.cre_end_epoch is not None and self.cre_end_epoch <= self.cre_start_epoch:
            raise ValueError(f"cre_end_epoch {self.cre_end_epoch} must be after cre_start_epoch "
                             f"{self.cre_start_epoch}")
        return self


class LossConfig(_Strict):
    method: Literal["baseline", "cal", "fire2", "cssc", "sci", "cre_bsga"] = "cal"
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    triplet_weight: float = Field(0.0, ge=0)
    triplet_start_epoch: int = Field(0, ge=0, description="0-based epoch from which the triplet term runs")
    triplet_margin: float = Field(0.3, ge=0)
    triplet_distance: Literal["cosine", "euclidean"] = "cosine"
    clothes_scale: float = Field(16.0, gt=0)
    adv_epsilon: float = Field(0.1, ge=0, lt=1)
    adv_weight: float = Field(1.0, ge=0)
    start_epoch_cal: int = Field(25, ge=0, description="0-based epoch from which the clothes head and L_CA run")
    fire2: Fire2Config = Fire2Config()
    cssc: CsscConfig = CsscConfig()
    sci: SciConfig = SciConfig()
    cre_bsga: CreBsgaConfig = CreBsgaConfig()


class OptimConfig(_Strict):
    epochs: int = Field(60, gt=0)
    lr: float = Field(3.5e-4, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    milestones: list[int] = [20, 40]
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up from warmup_factor * lr over these epochs")
    warmup_factor: float = Field(0.01, gt=0, le=1)
    clothes_lr: float = Field(3.5e-4, gt=0)
    clothes_weight_decay: float = Field(5e-4, ge=0)


class EvalConfig(_Strict):
    every: int = Field(5, gt=0, description="evaluate every N epochs and at the last epoch")
    batch_size: int = Field(128, gt=0)
    flip: bool = True
    selection: str | None = None  # "<split>/<label>" whose rank-1 picks the best epoch; None = the data set's


class Recipe(_Strict):
    name: str
    seed: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = leave torch's default")
    output_dir: str = "runs/reid"
    data: DataConfig
    augment: AugmentConfig = AugmentConfig()
    model: ArchConfig = ArchConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()


class RecipeError(ValueError):
    pass


def load_recipe(path: str | Path, overrides: dict | None = None) -> Recipe:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"recipe {path} not found") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        msgs = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise RecipeError(f"recipe {path} is invalid:\n  " + "\n  ".join(msgs)) from None
