"""Matcher thresholds measured for one model, instead of guessed.

`python -m reid calibrate --weights W --root D` embeds the test people of a data set (query + gallery, people
never used in training) with the model file exactly as the pipeline runs it (`create_embedder`: a checkpoint,
ONNX or OpenVINO file), averages each sighting's images (one person, one outfit, one camera: what a tracklet
gives the matcher), and measures cosine similarities between sightings in different cameras:

* identity feature: same person in the same outfit, same person in another outfit, different people;
* outfit descriptor (the model's clothes-sensitive output when it has one, else the hand-made descriptor the
  pipeline uses, reid/inference/outfit.py): same person same outfit against same person other outfit.

Suggestions (each the point of a rule on those distributions, printed with the rates it gives):

* `threshold` (join an identity): decided as the matcher decides, against a gallery. Each sighting is played
  twice against `gallery_people` other people (default 20) (drawn at random, their sightings in other cameras): once as a
  person returning in another outfit (the gallery also holds their other-outfit sightings: right when their
  best cosine is the top one and reaches the threshold) and once as a new person (right when nothing reaches
  it). The suggestion maximises the share of right decisions when `returning_share` of them (default 0.75) are
  returning people: each person is seen in several tracks and only the first is new. A pairwise rule (e.g.
  Youden's J on pairs) ignores that a new person is compared with everybody: at a pair false-accept rate of
  6 %, a new person meets 30 strangers and is linked to one of them 85 % of the time.
* `outfit_threshold` (known vs new outfit): the same rule between "same outfit" and "other outfit" of one person.
* `same_outfit_threshold` (printed, not written; set it in the config to use it): a link when the tracklet
  wears a known outfit of the candidate needs the 5th percentile of "same person, same outfit", never below
  `threshold`. A clothes-changing model still scores two people in one outfit above two outfits of one person,
  so a threshold low enough for outfit changes lets a stranger in a known outfit in. On SynthCC `bench` scenes
  it did not pay (README, *Benchmarks*): track fragments of one person in one outfit fall below it too.
* `window_threshold` (join an identity inside a transit window of `matcher.topology`): the `threshold` rule
  against `window_people` other people (default 4): arriving soon after someone left a nearby camera, a
  tracklet competes only with the few who did. Used only when the config has a topology.
* `merge_threshold` (two identities are one person): the cosine that only 0.1 % of different-people pairs reach,
  never below `threshold`; merges rewrite history, so they need near-certainty.

`--write` stores the suggestions in the model file's metadata (`ccreid.spec` -> `extra.matcher`, carried by
`reid export` into ONNX and OpenVINO files); the pipeline uses them for every matcher threshold its config leaves
unset. Only `.safetensors` and `.onnx` files are rewritten in place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np

from reid.inference.base import PreprocessSpec, l2_normalise
from reid.inference.centring import CAMERA, centre_by_camera, check_mode
from reid.inference.outfit import outfit_descriptors

MATCHER_KEY = "matcher"  # PreprocessSpec.extra key holding the suggested thresholds
MERGE_FALSE_RATE = 0.001
# A decision is made against the people seen so far: in a scene that fills up to N people, about N / 2 on average.
GALLERY_PEOPLE = 20
# Most decisions are about people already seen: each person is seen in several tracks (cameras, and the
# fragments one camera's tracker makes), only the first of which is new.
RETURNING_SHARE = 0.75
# Inside a transit window (matcher.topology) a tracklet competes only with the people who left a nearby camera
# just before and have not been seen since: 4-5 on SynthCC `bench` scenes (36 people, 4 cameras, a 3-5 s window,
# counted on the scenes' ground-truth routes, no model involved).
WINDOW_PEOPLE = 4
# When 95 % of different people's pairs are this close, the thresholds below have (almost) no margin.
CROWDED_COSINE = 0.95


@dataclass(frozen=True)
class Distribution:
    label: str
    pairs: int
    quantiles: dict[str, float]  # p5, p25, p50, p75, p95

    @classmethod
    def of(cls, label: str, values: np.ndarray) -> "Distribution":
        qs = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95]) if len(values) else [float("nan")] * 5
        return cls(label, int(len(values)), {k: round(float(v), 4) for k, v in zip(("p5", "p25", "p50", "p75", "p95"), qs)})


@dataclass(frozen=True)
class Cut:
    value: float
    accept_positive: float  # share of positive pairs at or above the value
    accept_negative: float  # share of negative pairs at or above the value


@dataclass(frozen=True)
class Calibration:
    model: str
    data: str
    sightings: int
    people: int
    descriptor: str  # "model appearance output" or "hand-made outfit descriptor"
    gallery_people: int
    returning_share: float
    identity: list[Distribution]
    outfit: list[Distribution]
    threshold: Cut
    outfit_threshold: Cut
    merge_threshold: Cut
    same_outfit_threshold: Cut
    window_people: int = WINDOW_PEOPLE
    window_threshold: Cut | None = None
    flip_sum: bool = False  # measured on flip-summed features (reid.flip_sum): the pipeline must embed the same way
    centring: str = "none"  # measured on features centred per camera (reid.centring): the pipeline must centre too

    @property
    def crowded(self) -> bool:
        """Different people's features all sit near cosine 1 (a raw post-ReLU feature such as CSSC's pooled
        vector): rankings may be fine, but no cosine threshold has room to separate people."""
        return self.identity[2].quantiles["p5"] >= CROWDED_COSINE

    def suggested(self) -> dict:
        window = {} if self.window_threshold is None else {"window_threshold": round(self.window_threshold.value, 3)}
        return {"threshold": round(self.threshold.value, 3), "outfit_threshold": round(self.outfit_threshold.value, 3),
                "merge_threshold": round(self.merge_threshold.value, 3), **window,
                **({"flip_sum": True} if self.flip_sum else {}),
                **({"centring": self.centring} if self.centring != "none" else {}),
                "calibrated_on": f"{self.data} ({self.people} people, {self.sightings} sightings), {date.today()}"}

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "suggested": self.suggested()}, indent=2)


def youden_cut(positive: np.ndarray, negative: np.ndarray) -> Cut:
    """The cosine maximising (share of positives >= t) - (share of negatives >= t)."""
    if not len(positive) or not len(negative):
        raise ValueError("calibration needs both positive and negative pairs; the data set has too few sightings")
    cand = np.unique(np.concatenate([positive, negative]))
    pos, neg = np.sort(positive), np.sort(negative)
    tpr = 1.0 - np.searchsorted(pos, cand, side="left") / len(pos)
    fpr = 1.0 - np.searchsorted(neg, cand, side="left") / len(neg)
    best = int(np.argmax(tpr - fpr))
    return Cut(float(cand[best]), float(tpr[best]), float(fpr[best]))


def gallery_cut(cos: np.ndarray, person: np.ndarray, outfit: np.ndarray, camera: np.ndarray,
                gallery_people: int, returning_share: float = 0.5, repeats: int = 5, seed: int = 0) -> Cut:
    """The join threshold that maximises the share of right decisions against galleries of `gallery_people`
    others, when `returning_share` of the decisions are people returning in a new outfit and the rest new
    people (returning ones linked right, new ones left alone); see the module notes.

    `accept_positive` of the result: share of returning people linked right; `accept_negative`: share of new
    people linked to somebody."""
    people = np.unique(person)
    if len(people) < 2:
        raise ValueError("calibration needs at least two people")
    other_cam = camera[:, None] != camera[None, :]
    # Best cosine of each sighting to each person's other-camera sightings (the gallery holds what it saw).
    idx = np.searchsorted(people, person)
    best = np.full((len(person), len(people)), -np.inf, np.float32)
    masked = np.where(other_cam, cos, -np.inf).astype(np.float32)
    for k in range(len(people)):
        best[:, k] = masked[:, idx == k].max(axis=1)
    same_person_other_outfit = (person[:, None] == person[None, :]) & (outfit[:, None] != outfit[None, :]) & other_cam
    pos = np.where(same_person_other_outfit, cos, -np.inf).max(axis=1)
    keep = np.isfinite(pos)  # sightings whose person has another outfit in another camera
    if not keep.any():
        raise ValueError("calibration needs people seen in at least two outfits in different cameras")
    n = min(gallery_people, len(people) - 1)
    rng = np.random.default_rng(seed)
    strangers = []
    for _ in range(repeats):
        # n random other people per sighting: rank random keys, pushing the sighting's own person last.
        keys = rng.random((len(person), len(people)))
        keys[np.arange(len(person)), idx] = np.inf
        drawn = np.argsort(keys, axis=1)[:, :n]
        strangers.append(np.take_along_axis(best, drawn, axis=1).max(axis=1))
    neg = np.concatenate(strangers)
    pos_r = np.tile(pos, repeats)
    ok = np.tile(keep, repeats)
    pos_r, neg_ret = pos_r[ok], neg[ok]
    cand = np.unique(np.concatenate([pos_r, neg]))
    cand = cand[np.isfinite(cand)]
    # returning: right iff pos >= t and pos > best stranger; new: right iff best stranger < t.
    wins = np.sort(pos_r[pos_r > neg_ret])
    returning_ok = (len(wins) - np.searchsorted(wins, cand, side="left")) / len(pos_r)
    new_linked = 1.0 - np.searchsorted(np.sort(neg), cand, side="left") / len(neg)
    score = returning_share * returning_ok + (1.0 - returning_share) * (1.0 - new_linked)
    best_i = int(np.argmax(score))
    return Cut(float(cand[best_i]), float(returning_ok[best_i]), float(new_linked[best_i]))


def rate_cut(positive: np.ndarray, negative: np.ndarray, false_rate: float, floor: float) -> Cut:
    value = max(float(np.quantile(negative, 1.0 - false_rate)), floor)
    return Cut(value, float(np.mean(positive >= value)), float(np.mean(negative >= value)))


@dataclass(frozen=True)
class Sightings:
    person: np.ndarray  # (S,)
    outfit: np.ndarray  # (S,) unique per (person, clothes)
    camera: np.ndarray  # (S,)
    identity: np.ndarray  # (S, D) mean identity feature, unit
    look: np.ndarray  # (S, Da) mean outfit descriptor, unit


def embed_sightings(embedder, records, batch: int = 64, centring: str = "none") -> tuple[Sightings, str]:
    """Mean features per (person, clothes, camera) group of image records.

    `centring` "camera": each image's identity feature minus its camera's mean over these records, renormalised,
    before the groups are averaged (reid/inference/centring.py; the pipeline's reid.centring)."""
    from reid.transforms import read_record  # applies a levelled data set's gains

    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.pid, r.clothes, r.camid), []).append(i)
    ident, looks, from_model = [], [], None
    for start in range(0, len(records), batch):
        crops = [read_record(r) for r in records[start:start + batch]]
        out = embedder.embed(crops)
        ident.append(out.identity)
        from_model = out.appearance is not None
        looks.append(out.appearance if from_model else outfit_descriptors(crops))
    ident_all, look_all = np.concatenate(ident), np.concatenate(looks)
    if check_mode(centring, "calibrate centring") == CAMERA:
        ident_all = centre_by_camera(ident_all, [r.camid for r in records])
    keys = sorted(groups)
    outfit_ids = {k: n for n, k in enumerate(sorted({(p, c) for p, c, _ in keys}))}
    s = Sightings(
        person=np.array([k[0] for k in keys]), outfit=np.array([outfit_ids[k[:2]] for k in keys]),
        camera=np.array([k[2] for k in keys]),
        identity=l2_normalise(np.stack([ident_all[groups[k]].mean(0) for k in keys])),
        look=l2_normalise(np.stack([look_all[groups[k]].mean(0) for k in keys])))
    return s, "model appearance output" if from_model else "hand-made outfit descriptor"


def calibrate_sightings(s: Sightings, model: str, data: str, descriptor: str, gallery_people: int = GALLERY_PEOPLE,
                        returning_share: float = RETURNING_SHARE, window_people: int = WINDOW_PEOPLE) -> Calibration:
    if not 0.0 <= returning_share <= 1.0:
        raise ValueError(f"returning_share is a share in [0, 1], got {returning_share}")
    n = len(s.person)
    iu = np.triu_indices(n, k=1)
    other_cam = (s.camera[:, None] != s.camera[None, :])[iu]
    same_person = (s.person[:, None] == s.person[None, :])[iu]
    same_outfit = (s.outfit[:, None] == s.outfit[None, :])[iu]
    identity_cos = s.identity @ s.identity.T
    id_cos = identity_cos[iu][other_cam]
    look_cos = (s.look @ s.look.T)[iu][other_cam]
    sp, so = same_person[other_cam], same_outfit[other_cam]
    same_fit, other_fit, other_person = id_cos[sp & so], id_cos[sp & ~so], id_cos[~sp]
    threshold = gallery_cut(identity_cos, s.person, s.outfit, s.camera, gallery_people, returning_share)
    # the same rule against the few people a transit window leaves (never above the plain threshold)
    window = gallery_cut(identity_cos, s.person, s.outfit, s.camera, window_people, returning_share)
    if window.value > threshold.value:
        window = threshold
    outfit = youden_cut(look_cos[sp & so], look_cos[sp & ~so])
    merge = rate_cut(np.concatenate([same_fit, other_fit]), other_person, MERGE_FALSE_RATE, threshold.value)
    # A link to a known outfit needs what one person in one outfit reaches 95 % of the time.
    same = max(float(np.quantile(same_fit, 0.05)), threshold.value) if len(same_fit) else threshold.value
    same_outfit = Cut(same, float(np.mean(same_fit >= same)) if len(same_fit) else float("nan"),
                      float(np.mean(other_person >= same)))
    return Calibration(
        model=model, data=data, sightings=n, people=int(len(np.unique(s.person))), descriptor=descriptor,
        gallery_people=min(gallery_people, int(len(np.unique(s.person))) - 1), returning_share=returning_share,
        identity=[Distribution.of("same person, same outfit", same_fit),
                  Distribution.of("same person, other outfit", other_fit),
                  Distribution.of("different people", other_person)],
        outfit=[Distribution.of("same person, same outfit", look_cos[sp & so]),
                Distribution.of("same person, other outfit", look_cos[sp & ~so]),
                Distribution.of("different people", look_cos[~sp])],
        threshold=threshold, outfit_threshold=outfit, merge_threshold=merge, same_outfit_threshold=same_outfit,
        window_people=min(window_people, int(len(np.unique(s.person))) - 1), window_threshold=window)


def calibrate(weights: str | Path, dataset: str, root: str | Path, backend: str = "auto", threads: int = 0,
              gallery_people: int = GALLERY_PEOPLE, returning_share: float = RETURNING_SHARE,
              window_people: int = WINDOW_PEOPLE, flip_sum: bool = False, centring: str = "none") -> Calibration:
    from reid.datasets.levelling import load_for_model
    from reid.inference.factory import create_embedder

    embedder = create_embedder(weights, backend, threads=threads, flip_sum=flip_sum)
    data = load_for_model(dataset, root, embedder.spec)  # levelled as the model's training cameras were
    records = [r for split in data.eval_splits for r in (*split.query, *split.gallery)]
    records = list({r.path: r for r in records}.values())  # splits may share images
    if not records:
        raise ValueError(f"{root}: the {dataset} data set has no test images to calibrate on")
    sightings, descriptor = embed_sightings(embedder, records, centring=centring)
    result = calibrate_sightings(sightings, str(weights), f"{dataset} {root}", descriptor, gallery_people,
                                 returning_share, window_people)
    return replace(result, flip_sum=flip_sum, centring=centring)


def format_calibration(c: Calibration) -> str:
    def table(title: str, rows: list[Distribution]) -> list[str]:
        out = [f"{title}", f"  {'pairs of sightings (other camera)':<34} {'n':>8}  p5     p25    p50    p75    p95"]
        for d in rows:
            q = d.quantiles
            out.append(f"  {d.label:<34} {d.pairs:>8}  " + "  ".join(f"{q[k]:.3f}" for k in ("p5", "p25", "p50", "p75", "p95")))
        return out

    lines = [f"model {c.model}; data {c.data}: {c.people} people, {c.sightings} sightings (mean feature per person, "
             "outfit and camera)"]
    lines += table("identity feature cosine", c.identity)
    lines += table(f"outfit cosine ({c.descriptor})", c.outfit)
    t, o, m = c.threshold, c.outfit_threshold, c.merge_threshold
    lines += [
        "suggested matcher settings:",
        f"  threshold: {t.value:.3f}         # against {c.gallery_people} other people, {100 * c.returning_share:.0f} % "
        f"of decisions about returning people: links "
        f"{100 * t.accept_positive:.1f} % of returning people in a new outfit to themselves, "
        f"{100 * t.accept_negative:.1f} % of new people to somebody",
        f"  outfit_threshold: {o.value:.3f}  # same outfit kept {100 * o.accept_positive:.1f} %, other outfit taken "
        f"for it {100 * o.accept_negative:.1f} %",
        f"  # same_outfit_threshold: {c.same_outfit_threshold.value:.3f}  (optional, not written: a link to a known "
        "outfit needs the 5th percentile of one person in one outfit)",
        f"  merge_threshold: {m.value:.3f}   # merges {100 * m.accept_positive:.1f} % of same-person pairs, "
        f"{100 * m.accept_negative:.2f} % of different-people pairs",
    ]
    if c.window_threshold is not None:
        w = c.window_threshold
        lines.append(f"  window_threshold: {w.value:.3f}  # with matcher.topology, inside a transit window: against "
                     f"{c.window_people} other people, links {100 * w.accept_positive:.1f} % of returning people in a "
                     f"new outfit, {100 * w.accept_negative:.1f} % of new people to somebody")
    if c.crowded:
        lines.append(f"warning: 95 % of different people's pairs are at cosine >= "
                     f"{c.identity[2].quantiles['p5']:.3f}, so these thresholds have almost no margin. A model whose "
                     "file returns its raw pre-BN feature (CSSC) does this: export it with `python -m reid export "
                     "--feature centred` and calibrate that file.")
    return "\n".join(lines)


def write_thresholds(path: str | Path, suggested: dict) -> None:
    """Store the suggestions in the model file's spec (`extra.matcher`), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from reid.checkpoint import update_spec

        update_spec(path, lambda spec: with_thresholds(spec, suggested))
    elif suffix == ".onnx":
        import onnx

        from reid.export import set_metadata
        from reid.inference.onnx_backend import read_spec

        model = onnx.load(str(path))
        set_metadata(model, with_thresholds(read_spec(path, model), suggested), {})
        tmp = path.with_suffix(".tmp.onnx")
        onnx.save(model, str(tmp))
        tmp.replace(path)
    else:
        raise ValueError(f"{path}: --write rewrites .safetensors and .onnx files; calibrate the checkpoint, then "
                         "`python -m reid export` it (the thresholds travel with the spec)")


def with_thresholds(spec: PreprocessSpec, suggested: dict) -> PreprocessSpec:
    return PreprocessSpec(**{**spec.__dict__, "extra": {**spec.extra, MATCHER_KEY: suggested}})
