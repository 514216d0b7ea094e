import itertools
import os

import pytest

from amnet.apps.files import iter_inputs


@pytest.fixture
def tree(tmp_path):
    """root/{b.jpg, a.PNG, notes.md, sub/{c.jpg, deeper/d.webp}, folder.jpg/}"""
    for rel in ["b.jpg", "a.PNG", "notes.md", "sub/c.jpg", "sub/deeper/d.webp"]:
        p = tmp_path / "root" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / "root" / "folder.jpg").mkdir()
    return tmp_path / "root"


def rel(paths, root):
    return [os.path.relpath(p, root) for p in paths]


def test_folder_lists_images_sorted_and_reports_a_folder_named_like_an_image(tree):
    assert rel(iter_inputs([str(tree)]), tree) == ["a.PNG", "b.jpg", "folder.jpg"]


def test_recursive_descends_into_sub_folders(tree):
    got = rel(iter_inputs([str(tree)], recursive=True), tree)
    assert got == ["a.PNG", "b.jpg", "sub/c.jpg", "sub/deeper/d.webp"]


def test_glob_matches_images_only_and_double_star_needs_recursive(tree):
    # a folder matched by * is listed like a folder argument (folder.jpg/ is empty)
    assert rel(iter_inputs([f"{tree}/*"]), tree) == ["a.PNG", "b.jpg", "sub/c.jpg"]
    assert rel(iter_inputs([f"{tree}/**/*.jpg"], recursive=True), tree) == ["b.jpg", "sub/c.jpg"]


def test_unmatched_glob_and_missing_path_are_passed_on_to_be_reported(tree):
    assert list(iter_inputs([f"{tree}/*.tiff", "missing.jpg"])) == [f"{tree}/*.tiff", "missing.jpg"]


def test_explicit_files_are_kept_whatever_their_suffix(tree):
    assert list(iter_inputs([str(tree / "notes.md")])) == [str(tree / "notes.md")]


def test_txt_list_relative_to_its_folder_with_comments_blank_lines_and_folders(tree, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text(
        "# my images\n\nroot/b.jpg\n  root/sub  \n" + str(tree / "a.PNG") + "\nnope.jpg\n"
    )
    got = list(iter_inputs([str(lst)]))
    assert got == [
        str(tmp_path / "root/b.jpg"),
        str(tmp_path / "root/sub/c.jpg"),
        str(tree / "a.PNG"),
        str(tmp_path / "nope.jpg"),
    ]


def test_arguments_are_expanded_lazily(tree):
    """An endless stream of arguments still yields its first paths (nothing is collected)."""
    endless = (str(tree / "b.jpg") for _ in itertools.count())
    assert len(list(itertools.islice(iter_inputs(endless), 5))) == 5


def test_order_of_arguments_is_kept(tree):
    got = list(iter_inputs([str(tree / "b.jpg"), str(tree / "sub"), str(tree / "a.PNG")]))
    assert rel(got, tree) == ["b.jpg", "sub/c.jpg", "a.PNG"]
