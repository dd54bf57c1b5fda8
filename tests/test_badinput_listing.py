"""Bad-input corpus, folders: what ``scan_images`` lists, skips (with a reason) or ignores.

Each case makes one entry in an otherwise ordinary folder (which holds ``base.png``) and
states the outcome: ``"listed"``, ``"ignored"`` (not an image, not reported) or
``"skipped: <phrase>"``. A listing that would block (a FIFO opened) fails on a deadline.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _badinput import (
    LONG,
    NON_UTF8,
    deadline,
    directory,
    encode,
    fifo,
    image,
    link,
    missing,
    rgb,
    unix_socket,
    write,
)

from cvretrieval.io import list_images, scan_images


def outside(name: str):
    """A link to an image in a folder next to the scanned one."""

    def make(folder: Path) -> Path:
        other = folder.parent / "elsewhere"
        other.mkdir(exist_ok=True)
        (other / "far.png").write_bytes(encode(rgb(), "PNG"))
        path = folder / name
        os.symlink(other / "far.png", path)
        return path

    return make


def nested(name: str, inner):
    def make(folder: Path) -> Path:
        sub = folder / name
        sub.mkdir()
        inner(sub)
        return sub

    return make


def unlistable(name: str):
    def make(folder: Path) -> Path:
        sub = folder / name
        sub.mkdir()
        (sub / "x.png").write_bytes(encode(rgb(), "PNG"))
        sub.chmod(0)
        return sub

    return make


png = lambda name: image(name, rgb, "PNG")  # noqa: E731

# (id, make, outcome, relative path expected in the listing or the skipped list)
CASES = [
    ("regular", png("a.png"), "listed", "a.png"),
    ("upper-case", png("B.JPEG"), "listed", "B.JPEG"),
    ("unicode", png("фото é.png"), "listed", "фото é.png"),
    ("newline-name", png("two\nlines.png"), "listed", "two\nlines.png"),
    ("non-utf8-name", png(NON_UTF8), "listed", NON_UTF8),
    ("250-characters", png(LONG), "listed", LONG),
    ("empty-file", write("e.png", b""), "listed", "e.png"),  # fails later, when read
    ("text-as-jpg", write("t.jpg", b"words"), "listed", "t.jpg"),  # fails later, when read
    ("link-to-file", link("l.png", "base.png"), "listed", "l.png"),
    ("link-outside-root", outside("far.png"), "listed", "far.png"),
    ("link-chain", link("c2.png", "c1.png", link("c1.png", "base.png")), "listed", "c2.png"),
    ("in-subfolder", nested("sub", png("s.png")), "listed", "sub/s.png"),
    ("in-folder-named-jpg", nested("x.jpg", png("in.png")), "listed", "x.jpg/in.png"),
    ("folder-named-jpg", directory("d.jpg"), "ignored", "d.jpg"),
    ("hidden-file", png(".h.png"), "ignored", ".h.png"),
    ("hidden-folder", nested(".cache", png("c.png")), "ignored", ".cache/c.png"),
    ("not-an-image-suffix", png("notes.txt"), "ignored", "notes.txt"),
    ("no-suffix", png("image"), "ignored", "image"),
    ("fifo-no-suffix", fifo("pipe"), "ignored", "pipe"),
    ("link-no-suffix-to-file", link("lnk", "base.png"), "ignored", "lnk"),
    ("broken-link-txt", link("n.txt", "nowhere.txt"), "ignored", "n.txt"),
    ("fifo", fifo("f.png"), "skipped: FIFO", "f.png"),
    ("socket", unix_socket("s.jpg"), "skipped: socket", "s.jpg"),
    ("device-link", link("null.png", os.devnull), "skipped: device", "null.png"),
    ("broken-link", link("b.png", "nowhere.png"), "skipped: broken symbolic link", "b.png"),
    ("self-loop", link("loop.png", "loop.png"), "skipped: loop", "loop.png"),
    ("loop-pair", link("p1.jpg", "p2.jpg", link("p2.jpg", "p1.jpg")), "skipped: loop",
     "p1.jpg|p2.jpg"),
    ("loop-no-suffix", link("cyc", "cyc"), "skipped: loop", "cyc"),
    ("link-to-folder", link("album", ".", None), "skipped: link to a folder", "album"),
    ("link-to-folder-named-jpg", link("v.jpg", "real", directory("real")),
     "skipped: link to a folder", "v.jpg"),
    ("unlistable-folder", unlistable("locked"), "skipped: permission denied", "locked"),
    ("fifo-in-subfolder", nested("deep", fifo("q.webp")), "skipped: FIFO", "deep/q.webp"),
]


def _needs(case_id: str) -> str | None:
    if case_id == "unlistable-folder" and hasattr(os, "geteuid") and os.geteuid() == 0:
        return "root lists folders whatever their permissions"
    if "fifo" in case_id and not hasattr(os, "mkfifo"):
        return "no FIFOs here"
    return None


@pytest.mark.parametrize("recursive", [True, False], ids=["recursive", "flat"])
@pytest.mark.parametrize("cid, make, outcome, rel", CASES, ids=[c[0] for c in CASES])
def test_listing_case(tmp_path, cid, make, outcome, rel, recursive):
    why = _needs(cid)
    if why:
        pytest.skip(why)
    root = tmp_path / "root"
    root.mkdir()
    png("base.png")(root)
    make(root)
    if not recursive and "/" in rel:
        outcome = "ignored"  # sub-folders are not looked at
    if not recursive and "link to a folder" in outcome:
        outcome = "ignored"  # nor are links to folders reported
    with deadline(10):
        paths, skipped = scan_images(root, recursive=recursive)
    listed = [p.relative_to(root).as_posix() for p in paths]
    reasons = {p.relative_to(root).as_posix(): r for p, r in skipped}
    assert "base.png" in listed
    if outcome == "listed":
        assert rel in listed and not reasons
    elif outcome == "ignored":
        assert listed == ["base.png"] and not reasons
    else:
        phrase = outcome.split(": ", 1)[1]
        assert listed == ["base.png"]
        assert list(reasons) == rel.split("|"), reasons
        assert all(phrase in r and "\n" not in r for r in reasons.values())
    assert list_images(root, recursive=recursive) == paths
    assert listed == sorted(listed)


# --------------------------------------------------------------------------- the root itself


@pytest.mark.parametrize(
    "make, expected",
    [
        (png("one.png"), "listed"),
        (png("one.txt"), "empty"),
        (fifo("root.png"), "skipped: FIFO"),
        (link("b", "nowhere"), "skipped: broken symbolic link"),
        (link("loop", "loop"), "skipped: loop"),
        (missing("nowhere"), "FileNotFoundError"),
    ],
    ids=["file", "non-image-file", "fifo", "broken-link", "loop", "missing"],
)
def test_root_that_is_not_a_folder(tmp_path, make, expected):
    root = make(tmp_path)
    with deadline(10):
        if expected == "FileNotFoundError":
            with pytest.raises(FileNotFoundError, match="does not exist"):
                scan_images(root)
            return
        paths, skipped = scan_images(root)
    if expected == "listed":
        assert (paths, skipped) == ([root], [])
    elif expected == "empty":
        assert (paths, skipped) == ([], [])
    else:
        assert paths == [] and [p for p, _ in skipped] == [root]
        assert expected.split(": ", 1)[1] in skipped[0][1]


def test_many_skips_are_all_reported(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(5):
        os.mkfifo(root / f"f{i}.png")
        os.symlink(f"l{i}.jpg", root / f"l{i}.jpg")
    with deadline(10):
        paths, skipped = scan_images(root)
    assert paths == []
    assert [p.name for p, _ in skipped] == sorted(
        [f"f{i}.png" for i in range(5)] + [f"l{i}.jpg" for i in range(5)]
    )


# --------------------------------------------------------------------------- permissions
# chmod 000 does not stop root, so these also simulate the refusal the kernel would give.


def test_unlistable_subfolder_is_reported_even_as_root(tmp_path, monkeypatch):
    import errno

    import cvretrieval._files as files

    root = tmp_path / "root"
    (root / "locked").mkdir(parents=True)
    png("base.png")(root)
    png("hidden-from-us.png")(root / "locked")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(files.os, "scandir", scandir)
    paths, skipped = scan_images(root)
    assert [p.name for p in paths] == ["base.png"]
    assert [(p.name, "permission denied" in r) for p, r in skipped] == [("locked", True)]


def test_unreadable_file_is_one_line_even_as_root(tmp_path, monkeypatch):
    import errno

    import cvretrieval._files as files
    from cvretrieval.errors import ImageReadError
    from cvretrieval.io import read_image

    path = png("locked.png")(tmp_path)
    real_open = os.open

    def refuse(p, *args, **kwargs):
        if Path(p) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", refuse)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"cannot read image {path}: permission denied")
    assert "check the file's permissions" in message and "\n" not in message
