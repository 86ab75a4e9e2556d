"""Every loader on a tiny fixture tree in its real layout (names as the real data sets write them)."""

from pathlib import Path

import pytest

from reid.datasets import DatasetLayoutError, load_dataset
from tests.reid_fixtures import (make_celebreid, make_deepchange, make_last, make_ltcc, make_prcc, make_synthcc,
                                 make_vcclothes)


def _by_name(records):
    return {Path(r.path).name: r for r in records}


def _check_pid2clothes(ds):
    assert ds.pid2clothes.shape == (ds.num_train_pids, ds.num_train_clothes)
    for r in ds.train:
        assert ds.pid2clothes[r.pid, r.clothes]
    # every clothes class belongs to exactly one identity
    assert (ds.pid2clothes.sum(axis=0) == 1).all()


def test_ltcc(tmp_path):
    ds = load_dataset("ltcc", make_ltcc(tmp_path))  # parent folder: finds LTCC_ReID/ itself
    assert ds.num_train_pids == 2 and ds.num_train_clothes == 3 and len(ds.train) == 4
    tr = _by_name(ds.train)
    # pids relabelled in sorted raw order: 3 -> 0, 10 -> 1; cameras 1-based on disk -> 0-based
    assert tr["003_1_c1_000004.png"].pid == 0 and tr["010_2_c3_000003.png"].pid == 1
    assert tr["010_1_c2_000002.png"].camid == 1
    assert tr["010_1_c1_000001.png"].clothes == tr["010_1_c2_000002.png"].clothes != tr["010_2_c3_000003.png"].clothes
    _check_pid2clothes(ds)
    (split,) = ds.eval_splits
    assert set(split.protocols) == {"general", "cloth_changing", "same_clothes"}
    q, g = _by_name(split.query), _by_name(split.gallery)
    assert q["007_1_c1_000010.png"].pid == 7  # test pids stay raw
    # test clothes relabelled jointly over query and gallery: outfit 7_1 has one id in both
    assert q["007_1_c1_000010.png"].clothes == g["007_1_c2_000012.png"].clothes
    assert q["007_1_c1_000010.png"].clothes != g["007_2_c3_000013.png"].clothes
    assert q["012_2_c4_000011.png"].clothes == g["012_2_c5_000015.png"].clothes
    assert ds.selection == "test/cloth_changing"


def test_prcc(tmp_path):
    ds = load_dataset("prcc", make_prcc(tmp_path))
    assert ds.num_train_pids == 2 and ds.num_train_clothes == 4 and len(ds.train) == 6
    tr = {(Path(r.path).parent.name, Path(r.path).name[0]): r for r in ds.train}
    # cameras A and B share an outfit, C is the second outfit
    assert tr[("001", "A")].clothes == tr[("001", "B")].clothes != tr[("001", "C")].clothes
    assert [tr[("005", c)].camid for c in "ABC"] == [0, 1, 2]
    _check_pid2clothes(ds)
    sc, cc = ds.eval_splits
    assert sc.name == "same_clothes" and cc.name == "cloth_changing"
    assert sc.protocols == {"same_clothes": "general"} and cc.protocols == {"cloth_changing": "general"}
    assert {r.camid for r in sc.query} == {1} and {r.camid for r in cc.query} == {2}
    assert sc.gallery == cc.gallery and {r.camid for r in sc.gallery} == {0}
    assert len(sc.gallery) == 4 and len(sc.query) == 4 and len(cc.query) == 4
    # test clothes: A/B -> 2*label, C -> 2*label + 1; pids raw
    g = {r.pid: r.clothes for r in sc.gallery}
    assert g == {101: 0, 104: 2}
    assert {r.pid: r.clothes for r in cc.query} == {101: 1, 104: 3}
    assert any("val" in n for n in ds.notes)


def test_vcclothes(tmp_path):
    ds = load_dataset("vcclothes", make_vcclothes(tmp_path))
    assert ds.num_train_pids == 2 and ds.num_train_clothes == 3
    tr = _by_name(ds.train)
    assert tr["0001-02-01-02.jpg"].camid == 1  # camera 2 on disk -> 1
    assert tr["0001-01-01-01.jpg"].clothes == tr["0001-02-01-02.jpg"].clothes != tr["0001-04-02-03.jpg"].clothes
    _check_pid2clothes(ds)
    splits = {s.name: s for s in ds.eval_splits}
    assert len(splits["all"].query) == 3 and len(splits["all"].gallery) == 4
    # cams 2&3 subset (same clothes) and cams 3&4 subset (clothes change), cameras 0-based after parsing
    assert {r.camid for s in ("query", "gallery") for r in getattr(splits["cams23"], s)} == {1, 2}
    assert {r.camid for s in ("query", "gallery") for r in getattr(splits["cams34"], s)} == {2, 3}
    assert [Path(r.path).name for r in splits["cams34"].query] == ["0300-03-01-02.jpg", "0301-04-02-01.jpg"]
    assert splits["cams23"].protocols == {"same_clothes": "general"}
    assert splits["cams34"].protocols == {"cloth_changing": "general"}


def test_celebreid(tmp_path):
    ds = load_dataset("celeb-reid", make_celebreid(tmp_path))
    assert ds.num_train_pids == 2 and len(ds.train) == 4
    (split,) = ds.eval_splits
    assert split.protocols == {"general": "general"}
    cams = [r.camid for r in split.query + split.gallery]
    assert len(set(cams)) == len(cams)  # unique camera per test image: nothing is junk
    assert sorted(r.pid for r in split.gallery) == [500, 501, 501]


def test_deepchange(tmp_path):
    ds = load_dataset("deepchange", make_deepchange(tmp_path))
    assert ds.num_train_pids == 2
    tr = _by_name(ds.train)
    # clothes key = P<pid> + third field; camid is the tracklet id
    assert tr["P0001_C01_T2_F001.jpg"].clothes != tr["P0001_C02_T5_F002.jpg"].clothes
    assert tr["P0001_C02_T5_F002.jpg"].camid == 4
    _check_pid2clothes(ds)
    test = {s.name: s for s in ds.eval_splits}["test"]
    g = _by_name(test.gallery)
    assert g["P0200_C06_T4_F003.jpg"].pid == 200 and g["P0200_C06_T4_F003.jpg"].camid == 14
    assert _by_name(test.query)["P0200_C05_T1_F001.jpg"].clothes == g["P0200_C05_T1_F002.jpg"].clothes
    assert ds.selection == "test/general"


def test_deepchange_bad_line_names_file_and_line(tmp_path):
    make_deepchange(tmp_path)
    (tmp_path / "DeepChangeDataset" / "train-set-bbox.txt").write_text("P0001_C01_T2_F001.jpg,3\nbroken.jpg,1\n")
    with pytest.raises(DatasetLayoutError, match=r"train-set-bbox.txt:2"):
        load_dataset("deepchange", tmp_path)


def test_last(tmp_path):
    ds = load_dataset("last", make_last(tmp_path))
    assert ds.num_train_pids == 2 and ds.num_train_clothes == 3
    tr = _by_name(ds.train)
    assert tr["000001_0_c1_a0.jpg"].clothes != tr["000001_1_c2_a1.jpg"].clothes
    _check_pid2clothes(ds)
    test = {s.name: s for s in ds.eval_splits}["test"]
    assert len(test.query) == 2 and len(test.gallery) == 3
    # clothes id := pid; camera ids unique, gallery offset by the query count
    assert all(r.clothes == r.pid for r in test.query + test.gallery)
    assert [r.camid for r in test.query + test.gallery] == [0, 1, 2, 3, 4]


def test_synthcc(tmp_path):
    root = make_synthcc(tmp_path / "s")
    ds = load_dataset("synthcc", root)
    assert ds.num_train_pids == 6 and ds.num_train_clothes == 12 and len(ds.train) == 6 * 2 * 3 * 2
    _check_pid2clothes(ds)
    (split,) = ds.eval_splits
    assert {r.camid for r in split.query} == {1} and {r.camid for r in split.gallery} == {2, 3}
    assert all(r.mask_path and Path(r.mask_path).is_file() for r in ds.train + list(split.query))
    assert {r.pid for r in split.query} == set(range(100, 104))
    assert not any("WARNING" in n for n in ds.notes)


@pytest.mark.parametrize("name", ["ltcc", "prcc", "vcclothes", "celebreid", "deepchange", "last", "synthcc"])
def test_missing_layout_is_a_clear_error(tmp_path, name):
    with pytest.raises(DatasetLayoutError, match=name):
        load_dataset(name, tmp_path)


def test_unparseable_name_is_reported(tmp_path):
    make_ltcc(tmp_path)
    from tests.reid_fixtures import write_image

    write_image(tmp_path / "LTCC_ReID" / "train" / "notes.png")
    with pytest.raises(DatasetLayoutError, match="notes.png"):
        load_dataset("ltcc", tmp_path)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("market1501", ".")


def test_synthcc_generator_output_loads(tmp_path):
    """Contract check against the real generator (`python -m synth people --preset tiny`)."""
    from synth.people import generate_people
    from synth.presets import PEOPLE_PRESETS

    cfg = PEOPLE_PRESETS["tiny"]
    generate_people(cfg, 0, tmp_path / "tiny", preset="tiny", log=lambda *_: None)
    ds = load_dataset("synthcc", tmp_path / "tiny")
    assert ds.num_train_pids == cfg.n_train
    assert ds.num_train_clothes == cfg.n_train * cfg.outfits_per_person
    (split,) = ds.eval_splits
    assert {r.pid for r in split.query} == {r.pid for r in split.gallery}
    assert not ({r.pid for r in split.query} & {int(Path(r.path).name[:4]) for r in ds.train})
    assert all(r.mask_path is not None for r in ds.train)
