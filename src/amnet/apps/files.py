"""Command-line inputs -> a stream of image paths: files, folders, globs and ``.txt`` lists.

Everything is lazy: folders are listed one at a time (sorted, so runs are reproducible), globs
are iterated, and list files are read line by line, so any number of images can be named
without building a list of them in memory.

>>> list(iter_inputs(["photos/", "extra/*.png", "more.txt"]))  # doctest: +SKIP
['photos/a.jpg', 'photos/b.png', 'extra/c.png', 'd.jpg']
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator

from amnet.inference.images import IMAGE_SUFFIXES

LIST_SUFFIX = ".txt"


def is_image_name(name: str) -> bool:
    """True when a file name has one of the image suffixes we look for in folders."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def iter_folder(folder: str, *, recursive: bool = False) -> Iterator[str]:
    """Image files in ``folder`` (sorted by name); sub-folders too when ``recursive``.

    Without ``recursive``, an entry named like an image is yielded even when it is not a
    readable file (a directory called ``x.jpg``, a broken link), so it is reported, not lost."""
    try:
        with os.scandir(folder) as it:
            # only the names we keep, then sorted: about 100 bytes per image in this folder
            keep = sorted((e.name, _is_dir(e)) for e in it if is_image_name(e.name) or
                          (recursive and _is_dir(e)))  # fmt: skip
    except OSError:
        yield folder  # unreadable folder: reported as an error by the image reader
        return
    for name, is_dir in keep:
        path = os.path.join(folder, name)
        if recursive and is_dir:
            yield from iter_folder(path, recursive=True)
        else:
            yield path


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def iter_list_file(path: str) -> Iterator[str]:
    """Paths listed one per line in a text file; blank lines and ``#`` comments are skipped.
    Relative paths are taken relative to the list file's folder."""
    base = os.path.dirname(path)
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                yield entry if os.path.isabs(entry) else os.path.join(base, entry)


def _has_magic(s: str) -> bool:
    return glob.has_magic(s)  # type: ignore[attr-defined]


def iter_inputs(args: Iterable[str], *, recursive: bool = False) -> Iterator[str]:
    """Expand command-line PATH arguments, in order, into image paths.

    - a folder: its image files (with ``recursive``, those of its sub-folders too);
    - a ``.txt`` file: the paths it lists, one per line (each expanded like an argument);
    - a pattern with ``*``, ``?`` or ``[...]`` that is not an existing path: the image files
      it matches, sorted (``**`` matches sub-folders with ``recursive``);
    - anything else, including a path that does not exist, is passed on as it is, so the
      image reader can score it or report why it cannot."""
    for arg in args:
        arg = os.fspath(arg)
        if os.path.isdir(arg):
            yield from iter_folder(arg, recursive=recursive)
        elif arg.lower().endswith(LIST_SUFFIX) and os.path.isfile(arg):
            for entry in iter_list_file(arg):
                yield from _expand_entry(entry, recursive)
        elif _has_magic(arg) and not os.path.lexists(arg):
            yield from _expand_glob(arg, recursive)
        else:
            yield arg


def _expand_entry(entry: str, recursive: bool) -> Iterator[str]:
    """One line of a list file: a folder, a pattern or a path (never another list)."""
    if os.path.isdir(entry):
        yield from iter_folder(entry, recursive=recursive)
    elif _has_magic(entry) and not os.path.lexists(entry):
        yield from _expand_glob(entry, recursive)
    else:
        yield entry


def _expand_glob(pattern: str, recursive: bool) -> Iterator[str]:
    """Image files matching a pattern, sorted. A matched folder is listed like a folder
    argument, except under ``recursive`` with ``**``, which already walks the folders."""
    walked = recursive and "**" in pattern
    matched = False
    # sorted() holds the names matching one pattern, never the images themselves
    for path in sorted(glob.iglob(pattern, recursive=recursive)):
        if os.path.isdir(path):
            if not walked:
                for p in iter_folder(path, recursive=recursive):
                    matched = True
                    yield p
        elif is_image_name(path):
            matched = True
            yield path
    if not matched:
        yield pattern  # reported as "file not found" rather than silently ignored
