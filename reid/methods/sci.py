"""SCI (Han et al., TCSVT 2025, "See What You Seek"; methods.md §4) as a training method. Uses clothes labels (L_cal).

No code was released; this is written from the paper's method section as summarised in methods.md §4. Choices the
paper leaves open are marked [ours] here and listed in reid/README.md ("SCI").

Text side (training only, never in an inference file): open_clip's `TextTransformer` (the text tower of the CLIP
file, frozen throughout) and dual learnable prompts (SSE), one set of M context tokens per training identity for
each template:
    prompt_id  = "A photo of a [X]1..[X]M person."      prompt_clo = "A photo of the [X]1..[X]M clothes."
The clothes prompt is indexed by identity too [ours: the paper pairs F_id(y) with F_clo(y) in Eq. 4-5, so both are
per identity]. F_ort(y) removes the clothes direction from F_id(y) (Gram-Schmidt; the printed Eq. 4-5 only rescales
F_id: `orthogonalise`, README "SCI: the projection formula").

Stage 1 (run once by `epoch_start` before the first stage-2 epoch; both encoders frozen, only the prompt tokens
train): image features V (CLIP's projected CLS, SIM still the identity) are extracted once, without augmentation;
then `stage1_epochs` of Adam over shuffled batches of them with
    L = L_i2t + L_t2i + L_sim,  L_sim = lambda_1 (1 - cos(F_ort, F_id)) + lambda_2 cos(F_ort, F_clo)   (Eqs. 8-11)
L_i2t / L_t2i are the supervised-contrastive image->text / text->image terms over the batch (positives: the same
identity), on cosine similarities scaled by CLIP's logit scale [ours: the paper writes s(., .)]. At the end F_ort of
every training identity becomes the frozen text bank: SIM's keys/values (a buffer of the image model, so it ships
with it) and the targets of L_i2tce.

Stage 2 (image encoder + SIM + neck + identity head; text tower and prompts frozen), Eq. 20 plus the triplet:
    L = L_id + w_tri L_tri + w_i2t L_i2tce + L_cal
L_id: label-smoothed CE on the BN neck; L_tri: batch-hard triplet on the pre-BN [cls; proj] [CLIP-ReID's, the paper
does not mention it]; L_i2tce: label-smoothed CE of the scaled cosines between the projected image feature and the
text bank; L_cal: CAL's clothes-based adversarial loss with CAL's own clothes head and Adam, from
`loss.start_epoch_cal` (methods.md §1.2; the paper's S_i^- reads inverted, CAL's code is followed).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reid.methods.base import EpochStart, LossTerm, MethodConfigError, StepResult
from reid.methods.cal import CAL


# ----------------------------------------------------------------------------------------------- SSE maths

def orthogonalise(f_id: torch.Tensor, f_clo: torch.Tensor, mode: str = "gram_schmidt") -> torch.Tensor:
    """F_ort per row. "gram_schmidt": F_id minus its component along F_clo (F_ort is orthogonal to F_clo).
    "printed": Eqs. 4-5 as printed, F_id - <F_clo, F_id>/|F_id|^2 F_id, which is F_id rescaled (kept for the
    ablation; cos(F_ort, F_id) = +-1 whatever the prompts)."""
    if mode == "gram_schmidt":
        coef = (f_id * f_clo).sum(-1, keepdim=True) / f_clo.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)
        return f_id - coef * f_clo
    if mode == "printed":
        coef = (f_clo * f_id).sum(-1, keepdim=True) / f_id.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)
        return f_id - coef * f_id
    raise ValueError(f"unknown projection {mode!r}")


def separation_loss(f_ort: torch.Tensor, f_id: torch.Tensor, f_clo: torch.Tensor, lambda_id: float,
                    lambda_clo: float) -> torch.Tensor:
    """L_sim (Eq. 8): lambda_1 (1 - mean cos(F_ort, F_id)) + lambda_2 mean cos(F_ort, F_clo).

    With the Gram-Schmidt F_ort the second cosine is 0 and the first is sqrt(1 - cos^2(F_id, F_clo)), so the term
    drives each identity's text feature orthogonal to its clothes feature (README, "SCI")."""
    c_id = F.cosine_similarity(f_ort, f_id, dim=-1).mean()
    c_clo = F.cosine_similarity(f_ort, f_clo, dim=-1).mean()
    return lambda_id * (1 - c_id) + lambda_clo * c_clo


def supervised_contrastive(anchors: torch.Tensor, others: torch.Tensor, a_labels: torch.Tensor,
                           o_labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean over anchors of -mean_{positives p} log softmax_k(scale cos(a, o_k))_p (Eqs. 9-10)."""
    logits = scale * F.normalize(anchors, dim=1) @ F.normalize(others, dim=1).t()
    logp = torch.log_softmax(logits, dim=1)
    pos = (a_labels[:, None] == o_labels[None, :]).float()
    return (-(pos * logp).sum(1) / pos.sum(1).clamp_min(1)).mean()


# ----------------------------------------------------------------------------------------------- text side

class TextEncoder(nn.Module):
    """open_clip's TextTransformer run on prompt embeddings (the learnable tokens bypass the token lookup)."""

    def __init__(self, cfg, embed_dim: int, quick_gelu: bool):
        super().__init__()
        from open_clip.transformer import QuickGELU, TextTransformer

        self.tower = TextTransformer(context_length=cfg.context_length, vocab_size=cfg.vocab_size,
                                     width=cfg.text_width, heads=cfg.text_heads, layers=cfg.text_layers,
                                     output_dim=embed_dim, act_layer=QuickGELU if quick_gelu else nn.GELU)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tower.token_embedding(ids)

    def forward(self, x: torch.Tensor, eot: int) -> torch.Tensor:
        t = self.tower
        x = x + t.positional_embedding.to(x.dtype)
        x = t.ln_final(t.transformer(x, attn_mask=t.attn_mask))[:, eot]
        proj = t.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def tokenize_template(template: str, m: int, context_length: int) -> tuple[torch.Tensor, int, int]:
    """-> (token ids [1, L], index of the first of the M placeholder tokens, index of the end-of-text token)."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    length = len(tok.encode(template)) + 2  # with the start- and end-of-text tokens
    if length > context_length:
        raise MethodConfigError(f"loss.sci: the template {template!r} takes {length} tokens, more than "
                                f"loss.sci.context_length {context_length}")
    ids = tok([template], context_length=context_length)
    x_id = tok.encode("X")[0]
    where = (ids[0] == x_id).nonzero().flatten().tolist()
    if len(where) != m or where != list(range(where[0], where[0] + m)):
        raise MethodConfigError(f"loss.sci: the prompt template {template!r} must hold exactly loss.sci.prompt_tokens "
                                f"= {m} consecutive X placeholders (found {len(where)})")
    return ids, where[0], int(ids[0].argmax())  # the end-of-text token has the largest id


class PromptLearner(nn.Module):
    """Per-identity learnable context tokens for the identity and clothes templates, the templates' fixed token
    embeddings around them, and (after stage 1) the frozen text bank F_ort of every training identity."""

    def __init__(self, text: TextEncoder, cfg, num_ids: int, embed_dim: int):
        super().__init__()
        w = cfg.text_width
        self.m = cfg.prompt_tokens
        self.ctx_id = nn.Parameter(torch.empty(num_ids, self.m, w))
        self.ctx_clo = nn.Parameter(torch.empty(num_ids, self.m, w))
        nn.init.normal_(self.ctx_id, std=0.02)  # "randomly initialised" (CLIP-ReID's std)
        nn.init.normal_(self.ctx_clo, std=0.02)
        self.eot: dict[str, int] = {}
        for name, template in (("id", cfg.id_template), ("clo", cfg.clothes_template)):
            ids, start, eot = tokenize_template(template, self.m, cfg.context_length)
            self.eot[name] = eot
            self.register_buffer(f"{name}_tokens", ids)
            self.register_buffer(f"{name}_prefix", torch.zeros(1, start, w))
            self.register_buffer(f"{name}_suffix", torch.zeros(1, cfg.context_length - start - self.m, w))
        self.register_buffer("bank", torch.zeros(num_ids, embed_dim))
        self.register_buffer("done", torch.zeros((), dtype=torch.long))  # 1 once stage 1 has run

    @torch.no_grad()
    def set_template_embeddings(self, text: TextEncoder) -> None:
        for name in ("id", "clo"):
            emb = text.embed_tokens(getattr(self, f"{name}_tokens"))
            prefix, suffix = getattr(self, f"{name}_prefix"), getattr(self, f"{name}_suffix")
            prefix.copy_(emb[:, :prefix.shape[1]])
            suffix.copy_(emb[:, prefix.shape[1] + self.m:])

    def embeddings(self, name: str, labels: torch.Tensor) -> torch.Tensor:
        ctx = (self.ctx_id if name == "id" else self.ctx_clo)[labels]
        prefix, suffix = getattr(self, f"{name}_prefix"), getattr(self, f"{name}_suffix")
        n = ctx.shape[0]
        return torch.cat([prefix.expand(n, -1, -1), ctx, suffix.expand(n, -1, -1)], dim=1)


# ----------------------------------------------------------------------------------------------- the method

class SCI(CAL):
    name = "sci"
    terms = ("id", "tri", "i2t", "adv")

    def __init__(self, recipe, dataset):
        super().__init__(recipe, dataset)
        m = recipe.model
        where = f"recipe {recipe.name}"
        if m.backbone != "clip_vit":
            raise MethodConfigError(f"{where}: loss.method sci needs the CLIP image encoder; set model.backbone: "
                                    "clip_vit (with model.pretrained: the CLIP file, or the tiny from-scratch sizes)")
        if recipe.data.height % m.clip_patch or recipe.data.width % m.clip_patch:
            raise MethodConfigError(f"{where}: data.height/width {recipe.data.height}x{recipe.data.width} must be "
                                    f"multiples of model.clip_patch {m.clip_patch}")
        self.cfg = recipe.loss.sci

    def arch_updates(self):
        m = self.r.model
        return {"num_classes": self.dataset.num_train_pids,
                "clip_image_size": (self.r.data.height, self.r.data.width),
                "sim_bank": self.dataset.num_train_pids if m.sim else 0}

    def attach(self, model, device) -> None:
        from reid.models.clip import ClipWeightsError

        try:
            self._attach(model, device)
        except ClipWeightsError as exc:
            raise MethodConfigError(f"recipe {self.r.name}: {exc}") from None

    def _attach(self, model, device) -> None:
        super().attach(model, device)  # CAL's clothes head and its Adam
        arch = model.arch
        cfg = self.cfg
        text = TextEncoder(cfg, arch.clip_embed_dim, arch.clip_quick_gelu)
        scale = cfg.logit_scale or 1 / 0.07
        if arch.pretrained:
            from reid.models.clip import ClipWeightsError, load_into, read_clip_file  # noqa: F811

            state = read_clip_file(arch.pretrained, arch.pretrained_sha256)  # verified and cached by the model
            names = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
            weights = {k: v for k, v in state.items() if k.startswith(names)}
            if not weights:
                raise ClipWeightsError(f"model.pretrained: {arch.pretrained} has no text tower (token_embedding.weight, "
                                       "transformer.*); SCI's prompts need CLIP's text encoder: give the full CLIP file")
            fix = ("set loss.sci.text_width / text_layers / text_heads / vocab_size to the file's text tower (ViT-B/16: "
                   "512 / 12 / 8 / 49408) or give the CLIP file the recipe was written for")
            load_into(text.tower, weights, "", arch.pretrained, fix,
                      resize={"positional_embedding": lambda t, s: t[:s[0]]})
            if cfg.logit_scale is None and "logit_scale" in state:
                scale = float(state["logit_scale"].exp())
        text.requires_grad_(False)  # frozen in both stages
        self.scale = scale
        prompts = PromptLearner(text, cfg, self.dataset.num_train_pids, arch.clip_embed_dim)
        prompts.set_template_embeddings(text)
        self.heads["text"] = text.to(device).eval()
        self.heads["prompts"] = prompts.to(device)
        self.model = model
        self.device = device

    # -- text features
    def text_features(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(F_id, F_clo, F_ort) of the given identities."""
        text, prompts = self.heads["text"], self.heads["prompts"]
        f_id = text(prompts.embeddings("id", labels), prompts.eot["id"])
        f_clo = text(prompts.embeddings("clo", labels), prompts.eot["clo"])
        return f_id, f_clo, orthogonalise(f_id, f_clo, self.cfg.projection)

    @torch.no_grad()
    def all_text_features(self, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.dataset.num_train_pids
        parts = [self.text_features(torch.arange(s, min(n, s + chunk), device=self.device)) for s in range(0, n, chunk)]
        return tuple(torch.cat([p[i] for p in parts]) for i in range(3))

    def text_cosines(self) -> dict[str, float]:
        f_id, f_clo, f_ort = self.all_text_features()
        cos = F.cosine_similarity
        return {"cos_ort_clo": round(float(cos(f_ort, f_clo, dim=-1).mean()), 5),
                "cos_ort_id": round(float(cos(f_ort, f_id, dim=-1).mean()), 5),
                "cos_id_clo": round(float(cos(f_id, f_clo, dim=-1).mean()), 5)}

    @torch.no_grad()
    def image_features(self, trainer) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected CLIP features of every training image (eval mode, no augmentation) and their identities."""
        from reid.inference.base import preprocess_crops
        from reid.transforms import read_bgr

        self.model.eval()
        recs = trainer.train_records
        feats = []
        for s in range(0, len(recs), trainer.r.eval.batch_size):
            crops = [read_bgr(r.path) for r in recs[s:s + trainer.r.eval.batch_size]]
            x = torch.from_numpy(preprocess_crops(crops, trainer.spec)).to(self.device)
            feats.append(self.model.backbone(x)[:, self.model.backbone.width:])
        labels = torch.as_tensor(np.asarray([r.pid for r in recs]), device=self.device)
        return torch.cat(feats), labels

    # -- stage 1
    def stage1(self, trainer) -> dict:
        cfg = self.cfg
        prompts = self.heads["prompts"]
        t0 = time.perf_counter()
        before = self.text_cosines()
        feats, labels = self.image_features(trainer)
        params = [prompts.ctx_id, prompts.ctx_clo]
        opt = torch.optim.Adam(params, lr=cfg.stage1_lr, weight_decay=cfg.stage1_weight_decay)
        g = torch.Generator().manual_seed(self.r.seed * 7919 + 1)
        history = []
        for epoch in range(cfg.stage1_epochs):
            lr = cfg.stage1_lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.stage1_epochs))  # cosine decay
            for group in opt.param_groups:
                group["lr"] = lr
            order = torch.randperm(len(labels), generator=g).to(self.device)
            sums, batches = np.zeros(3), 0
            for s in range(0, len(order), cfg.stage1_batch_size):
                idx = order[s:s + cfg.stage1_batch_size]
                if len(idx) < 2:
                    continue
                v, y = feats[idx], labels[idx]
                uniq, inv = torch.unique(y, return_inverse=True)
                f_id, f_clo, f_ort = self.text_features(uniq)
                t = f_ort[inv]
                l_i2t = supervised_contrastive(v, t, y, y, self.scale)
                l_t2i = supervised_contrastive(t, v, y, y, self.scale)
                l_sim = separation_loss(f_ort, f_id, f_clo, cfg.lambda_id, cfg.lambda_clo)
                loss = l_i2t + l_t2i + l_sim
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums += [l_i2t.item(), l_t2i.item(), l_sim.item()]
                batches += 1
            history.append([round(float(x), 5) for x in sums / max(batches, 1)])
        after = self.text_cosines()
        _, _, bank = self.all_text_features()
        with torch.no_grad():
            prompts.bank.copy_(bank)
            sim = getattr(self.model.backbone, "sim", None)
            if sim is not None:
                sim.bank.copy_(bank)
            prompts.done.fill_(1)
        prompts.requires_grad_(False)  # frozen in stage 2
        stage = {"epochs": cfg.stage1_epochs, "seconds": round(time.perf_counter() - t0, 1),
                 "before": before, "after": after}
        if history:
            stage["first"] = dict(zip(("i2t", "t2i", "sim"), history[0]))
            stage["last"] = dict(zip(("i2t", "t2i", "sim"), history[-1]))
        return stage

    # -- schedule
    def epoch_start(self, trainer, epoch) -> EpochStart:
        stats = {}
        if not int(self.heads["prompts"].done):
            stats["stage1"] = self.stage1(trainer)
            trainer.log(f"SCI stage 1: {stats['stage1']}")
        self.heads["prompts"].requires_grad_(False)
        sim = getattr(self.model.backbone, "sim", None)
        if sim is not None:
            stats["alpha_abs"] = round(float(sim.alpha.detach().abs().mean()), 6)
        return EpochStart(stats=stats)

    # -- stage 2
    def main_parameters(self):
        return []  # text tower and prompts frozen; the clothes head has its own Adam

    def step(self, trainer, out, pids, clothes, epoch) -> StepResult:
        result = self.identity_terms(out, pids, epoch, out.pooled)
        if self.cfg.i2t_weight > 0:
            v = out.pooled[:, self.model.backbone.width:]
            bank = self.heads["prompts"].bank
            logits = self.scale * F.normalize(v, dim=1) @ F.normalize(bank, dim=1).t()
            result.terms["i2t"] = LossTerm(self.id_loss(logits, pids), self.cfg.i2t_weight)
        return self.add_cal_terms(result, out, pids, clothes, epoch)
