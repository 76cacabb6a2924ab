"""Error messages suggest only what would work: names that exist, commands that would run."""

from __future__ import annotations

import pytest

from zoo.data import ingest, open_split
from zoo.errors import ZooError

from .helpers import write_image_folder


def test_an_invalid_dataset_name_suggests_the_real_one(data_home):
    with pytest.raises(ZooError, match=r"dataset 'cifar-10' is not a valid name .*did you mean cifar10"):
        open_split("cifar-10", "train")


def test_a_known_dataset_not_ingested_is_not_suggested_to_itself(data_home):
    with pytest.raises(ZooError) as e:
        open_split("cifar100", "train")
    assert "did you mean" not in str(e.value)
    assert str(e.value).endswith("run: python -m zoo ingest cifar100 --root DIR (or --download)")
    with pytest.raises(ZooError, match=r"did you mean cifar10.*run: python -m zoo ingest cifar11 --root DIR$"):
        open_split("cifar11", "train")  # a new name: an ImageFolder tree can be ingested under it, no --download


@pytest.mark.parametrize("name", ["cifar-10-python.tar.gz", "data.tgz", "x.zip"])
def test_an_archive_as_root_says_extract_it(tmp_path, data_home, name):
    (tmp_path / name).write_bytes(b"\x1f\x8b")
    with pytest.raises(ZooError, match=rf"--root .*{name} is an archive: extract it .* or use --download"):
        ingest("cifar10", tmp_path / name, progress=False)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ZooError, match="notes.txt is a file; pass the folder"):
        ingest("mine", tmp_path / "notes.txt", progress=False)


def test_a_classes_typo_is_named_before_anything_is_decoded(tmp_path, data_home, monkeypatch):
    from zoo.data import readers

    write_image_folder(tmp_path / "src", n_per_class=2, size=32, fmt="PNG")
    decoded = []
    monkeypatch.setattr(readers, "read_image_folder", lambda *a, **k: decoded.append(a) or pytest.fail("decoded"))
    classes = readers.class_folders(tmp_path / "src" / "train")
    with pytest.raises(ZooError, match=rf"--classes: unknown class\(es\) \['{classes[0]}x'\] .*did you mean "
                                       rf"{classes[0]}"):
        ingest("sub5", tmp_path / "src", classes=[classes[0] + "x"], progress=False)
    assert decoded == [] and not (data_home / "sub5").exists()
