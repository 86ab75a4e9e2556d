"""Named sizes and difficulty knobs for the two generators."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

# The parts of a SynthCC camera, each a group of its fields (synth.camera.Camera).
CAMERA_PARTS = {
    "background": ("background",),
    "view": ("yaws",),
    "colour": ("gain", "white_balance", "gamma"),
    "sharpness": ("blur_sigma", "noise_sigma", "jpeg_quality"),
    "range": ("person_px",),
    "occlusion": ("occlusion_prob",),
}


@dataclass(frozen=True)
class PeopleConfig:
    n_train: int  # training identities
    n_test: int  # test identities (query + gallery); disjoint from training ones
    outfits_per_person: int  # outfits of each *test* person (and of training people unless set below)
    n_cameras: int
    cams_per_outfit: int  # each test (person, outfit) is seen by this many cameras
    images_per_cam: int  # images per test (person, outfit, camera)
    crop_h: int = 128
    crop_w: int = 64
    outfit_share: float = 0.3  # probability that an outfit comes from the shared pool
    pool_size: int = 0  # shared outfits; 0 = one per ~6 outfits drawn
    body_distinct: float = 1.0  # spread of body cues (smaller = harder)
    occlusion: float = 0.15  # mean probability that a crop is partly occluded
    query_per_outfit: int = 1  # query images per test (person, outfit)
    # Training people apart from test people (0 = as the test people). Real CC sets give each training person
    # many outfits; with 3 the outfit names the person and models learn the outfit (synth/README.md).
    train_outfits_per_person: int = 0
    train_cams_per_outfit: int = 0
    train_images_per_cam: int = 0
    far_share: float = 0.5  # share of cameras that see people small and blurry (assigned exactly, not drawn)
    accessories: float = 0.0  # probability that a person keeps glasses / keeps one bag across all outfits
    clothes_grey: bool = False  # paint every garment plain grey (the clothes-erased ceiling; sanity only)
    # The cameras of another seed's set (-1: this set's own): the same people, outfits, poses and shots, filmed
    # by other cameras, so a model's loss on new cameras is measured apart from its loss on new people.
    camera_seed: int = -1
    # Which parts of a camera come from camera_seed's (comma-separated: background, view, colour, sharpness,
    # range, occlusion; "all"), the rest staying the set's own: what in a new camera costs a model its accuracy.
    camera_parts: str = "all"

    def validate(self) -> None:
        if self.n_train < 1 or self.n_test < 1:
            raise ValueError("need at least one training and one test identity (n_train, n_test)")
        if self.outfits_per_person < 2:
            raise ValueError("outfits_per_person must be >= 2, or there is no cloth-changing query")
        if not 2 <= self.cams_per_outfit <= self.n_cameras:
            raise ValueError(
                f"cams_per_outfit must be in [2, n_cameras={self.n_cameras}], got {self.cams_per_outfit}: "
                "a query needs a same-clothes match in another camera"
            )
        if self.images_per_cam < 1:
            raise ValueError("images_per_cam must be >= 1")
        if self.query_per_outfit < 1 or self.query_per_outfit >= self.cams_per_outfit * self.images_per_cam:
            raise ValueError("query_per_outfit must leave gallery images of the same outfit")
        if self.crop_h < 32 or self.crop_w < 16:
            raise ValueError(f"crop size {self.crop_h}x{self.crop_w} is too small (min 32x16)")
        if self.train_outfits_per_person < 0 or self.train_images_per_cam < 0:
            raise ValueError("train_outfits_per_person and train_images_per_cam must be >= 0 (0 = as test people)")
        if self.train_cams_per_outfit and not 1 <= self.train_cams_per_outfit <= self.n_cameras:
            raise ValueError(f"train_cams_per_outfit must be in [1, n_cameras={self.n_cameras}] or 0, "
                             f"got {self.train_cams_per_outfit}")
        if not 0.0 <= self.far_share <= 1.0:
            raise ValueError(f"far_share must be in [0, 1], got {self.far_share}")
        if not 0.0 <= self.accessories <= 1.0:
            raise ValueError(f"accessories must be a probability in [0, 1], got {self.accessories}")
        if self.camera_seed < -1:
            raise ValueError(f"camera_seed must be a seed >= 0, or -1 for the set's own cameras; got {self.camera_seed}")
        parts = set(self.camera_parts.split(","))
        if self.camera_parts != "all" and not parts <= set(CAMERA_PARTS):
            raise ValueError(f"camera_parts {self.camera_parts!r}: expected 'all' or a comma-separated subset of "
                             f"{', '.join(CAMERA_PARTS)}")

    @property
    def train_outfits(self) -> int:
        return self.train_outfits_per_person or self.outfits_per_person

    @property
    def train_cams(self) -> int:
        return self.train_cams_per_outfit or self.cams_per_outfit

    @property
    def train_images(self) -> int:
        return self.train_images_per_cam or self.images_per_cam

    @property
    def n_far_cameras(self) -> int:
        return int(round(self.far_share * self.n_cameras))

    @property
    def shared_pool(self) -> int:
        if self.pool_size:
            return self.pool_size
        return max(3, (self.n_train * self.train_outfits + self.n_test * self.outfits_per_person) // 6)


@dataclass(frozen=True)
class SceneConfig:
    n_people: int
    n_cameras: int
    width: int
    height: int
    fps: int
    frames: int
    cams_per_person: int  # cameras each person walks through (in order, one after another)
    outfits_per_person: int = 2
    change_prob: float = 0.5  # probability of a new outfit when entering the next camera
    outfit_share: float = 0.3
    body_distinct: float = 1.0
    occluders: int = 1  # static foreground objects per camera (pillars, planters)
    video_ext: str = ".mp4"
    # Seed of the people, their outfits and walks (-1: the scene's seed): another people seed films other people
    # with the same cameras (layout, colour, background), e.g. the footage a site's colour is learnt from.
    people_seed: int = -1
    # Seed of the wardrobes and of which outfit each walk wears (-1: the people seed): the same people in other
    # outfits, so scenes cut for training show each person in many outfits instead of repeating a few.
    outfit_seed: int = -1

    def validate(self) -> None:
        if self.n_people < 1 or self.n_cameras < 1:
            raise ValueError("need at least one person and one camera")
        if not 1 <= self.cams_per_person <= self.n_cameras:
            raise ValueError(f"cams_per_person must be in [1, n_cameras={self.n_cameras}]")
        if self.frames < self.fps:
            raise ValueError("frames must cover at least one second")
        if self.video_ext not in (".mp4", ".avi"):
            raise ValueError(f"video_ext must be .mp4 or .avi, got {self.video_ext!r}")
        if self.width % 2 or self.height % 2:
            raise ValueError("video width and height must be even")


BENCH_TRAIN = 80

PEOPLE_PRESETS: dict[str, PeopleConfig] = {
    # For tests: a few hundred crops in seconds.
    "tiny": PeopleConfig(n_train=8, n_test=6, outfits_per_person=3, n_cameras=3, cams_per_outfit=2, images_per_cam=2),
    # For the sanity benchmark and CPU training (v2): training people wear 12 outfits each (3 images per outfit,
    # from 3 of 4 cameras), so no outfit names its wearer; 100 test people in 3 outfits give 300 queries.
    "bench": PeopleConfig(n_train=BENCH_TRAIN, n_test=100, outfits_per_person=3, n_cameras=4, cams_per_outfit=3,
                          images_per_cam=2, train_outfits_per_person=12, train_cams_per_outfit=3,
                          train_images_per_cam=1),
    # Closer to LTCC in size, at 256x128.
    "large": PeopleConfig(
        n_train=150, n_test=100, outfits_per_person=4, n_cameras=6, cams_per_outfit=3, images_per_cam=6,
        train_outfits_per_person=12, train_cams_per_outfit=3, train_images_per_cam=2,
        crop_h=256, crop_w=128,
    ),
}

SCENE_PRESETS: dict[str, SceneConfig] = {
    "tiny": SceneConfig(n_people=5, n_cameras=3, width=480, height=270, fps=10, frames=100, cams_per_person=2, change_prob=0.6),
    "bench": SceneConfig(n_people=36, n_cameras=4, width=960, height=540, fps=10, frames=600, cams_per_person=3),
}


def with_overrides(cfg, overrides: dict[str, str]):
    """Apply ``key=value`` overrides (from the CLI) with the field's own type."""
    names = {f.name: f for f in fields(cfg)}
    typed = {}
    for k, v in overrides.items():
        if k not in names:
            raise ValueError(f"unknown knob {k!r}; known: {', '.join(sorted(names))}")
        cur = getattr(cfg, k)
        try:
            typed[k] = type(cur)(v) if not isinstance(cur, bool) else v.lower() in ("1", "true", "yes")
        except ValueError as e:
            raise ValueError(f"knob {k}={v!r}: expected {type(cur).__name__}") from e
    out = replace(cfg, **typed)
    out.validate()
    return out


def config_json(cfg) -> dict:
    return asdict(cfg)
