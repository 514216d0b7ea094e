"""Bad and odd inputs: each is scored after a sensible conversion or reported in one line."""

import csv
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import amnet
from amnet.inference.images import ImageError, load_image

OK = None  # expected: scored


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, side: int = 20_000) -> None:
    """A valid 1-bit PNG of side x side black pixels: ~50 kB on disk, 400 Mpx decoded."""
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def left_red_right_blue(w: int = 40, h: int = 20) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2 :] = (0, 0, 255)
    return Image.fromarray(a)


def make_corpus(d: Path) -> dict[str, str | None]:
    """Writes the corpus into ``d``; returns file name -> expected error fragment (None: scored)."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8))
    good_jpeg = jpeg_bytes(photo, quality=90)
    exp: dict[str, str | None] = {}

    def put(name: str, expected: str | None, data: bytes | None = None, img=None, **kw) -> None:
        if img is not None:
            img.save(d / name, **kw)
        else:
            (d / name).write_bytes(data or b"")
        exp[name] = expected

    put("empty.jpg", "empty file", b"")
    put("truncated.jpg", "truncated", good_jpeg[: len(good_jpeg) // 2])
    put("random_bytes.jpg", "not an image", rng.bytes(5000))
    put("text_file.jpg", "not an image", b"hello, I am a text file\n" * 20)
    put("html.png", "not an image", b"<!doctype html><html><body>404</body></html>")
    (d / "folder.jpg").mkdir()
    exp["folder.jpg"] = "is a directory"
    put("cmyk.jpg", OK, img=Image.new("CMYK", (50, 40), (0, 255, 255, 0)))
    put("sixteen_bit.png", OK, img=Image.fromarray(np.full((30, 40), 60000, np.uint16)))
    put("palette.png", OK, img=photo.convert("P", palette=Image.ADAPTIVE, colors=16))
    pal = photo.convert("P", palette=Image.ADAPTIVE, colors=16)
    put("palette_transparent.png", OK, img=pal, transparency=0)
    put("rgba.png", OK, img=photo.convert("RGBA"))
    put("la.png", OK, img=photo.convert("LA"))
    put("grayscale.jpg", OK, img=photo.convert("L"))
    put("one_bit.png", OK, img=photo.convert("1"))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    put("exif_rotated.jpg", OK, img=left_red_right_blue(), exif=exif.tobytes(), quality=95)
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "lime", "blue")]
    put("animated.gif", OK, img=frames[0], save_all=True, append_images=frames[1:], duration=50)
    put("one_pixel.png", OK, img=Image.new("RGB", (1, 1), "orange"))
    put("tall_1x3000.png", OK, img=Image.new("RGB", (1, 3000), "purple"))
    put("huge_10000x10000.jpg", OK, img=Image.new("L", (10_000, 10_000), 128), quality=50)
    png_bomb(d / "bomb.png")
    exp["bomb.png"] = "too large"
    put("float32.tif", OK, img=Image.fromarray(rng.random((30, 30)).astype(np.float32)))
    put("bitmap.bmp", OK, img=photo)
    put("webp.webp", OK, img=photo)
    put("jpeg_named.png", OK, good_jpeg)  # wrong extension: still an image
    put("truncated.png", "truncated", (d / "rgba.png").read_bytes()[:300])
    os.symlink(d / "nowhere.jpg", d / "broken_link.jpg")
    exp["broken_link.jpg"] = "file not found"
    photo.save(d / os.fsdecode(b"caf\xe9.png"))  # a file name that is not valid UTF-8
    exp["caf\\xe9.png"] = OK  # written with the odd byte as \xe9
    put("unreadable.jpg", "permission denied", good_jpeg)
    os.chmod(d / "unreadable.jpg", 0)
    return exp


# The run happens in a fresh process, as a user would see it. As root (which reads any file),
# the process first runs once as root so every lazy import is done, then drops to 'nobody'
# with os.setuid, so that 'unreadable.jpg' really cannot be read, and runs again.
CHILD = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    import conftest
    conftest._tiny_spec()
    from amnet.cli.main import main
    argv = sys.argv[2:]
    if os.geteuid() == 0:
        main(argv[:-1] + [argv[-1] + ".as_root.csv"])
        os.setgid(65534)
        os.setuid(65534)
    print("uid", os.geteuid(), file=sys.stderr)
    sys.exit(main(argv))
    """
)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    tiny = Path(tempfile.mkdtemp(prefix="amnet-corpus-"))  # /tmp: reachable by 'nobody'
    try:
        os.chmod(tiny, 0o777)
        corpus = tiny / "corpus"
        corpus.mkdir()
        expected = make_corpus(corpus)
        expected[str(tiny / "does_not_exist.jpg")] = "file not found"
        import torch
        from conftest import TINY_CFG, _tiny_spec

        from amnet.checkpoint import save_checkpoint
        from amnet.model.head import AMNetHead

        torch.manual_seed(0)
        ckpt = save_checkpoint(
            tiny / "tiny.safetensors", AMNetHead(TINY_CFG).eval(), trunk=_tiny_spec().name
        )
        os.chmod(ckpt, 0o644)
        out = tiny / "scores.csv"
        argv = [
            "predict",
            str(corpus),
            str(tiny / "does_not_exist.jpg"),
            "--model",
            str(ckpt),
            "--workers",
            "2",
            "--batch-size",
            "4",
            "--out",
            str(out),
        ]
        tests = str(Path(__file__).parent)
        p = subprocess.run(
            [sys.executable, "-c", CHILD, tests, *argv], capture_output=True, text=True, timeout=300
        )
        with open(out, newline="") as f:
            rows = {r["path"].removeprefix(f"{corpus}{os.sep}"): r for r in csv.DictReader(f)}
        yield p, rows, expected
    finally:
        shutil.rmtree(tiny, ignore_errors=True)


def test_corpus_is_big_enough(corpus_run):
    _, _, expected = corpus_run
    assert len(expected) >= 20


def test_run_goes_on_exits_1_and_prints_no_traceback(corpus_run):
    p, rows, expected = corpus_run
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    lines = [line for line in p.stderr.splitlines() if not line.startswith("uid ")]
    assert all(line.startswith("amnet predict: ") for line in lines), p.stderr
    assert ("uid 65534" in p.stderr) == (os.geteuid() == 0)  # privileges were really dropped
    assert len(rows) == len(expected)


def test_each_odd_file_is_scored_or_reported_in_one_line(corpus_run):
    _, rows, expected = corpus_run
    for name, want in expected.items():
        r = rows[name]
        if want is OK:
            assert r["error"] == "" and 0 < len(r["step_scores"].split()) == 3, (name, r)
            assert np.isfinite(float(r["score"])), name
        else:
            assert r["score"] == "" and want in r["error"], (name, r["error"])
            assert "\n" not in r["error"] and len(r["error"]) < 200, name


def test_exif_orientation_is_applied(tmp_path, tiny_checkpoint):
    exif = Image.Exif()
    exif[0x0112] = 6
    left_red_right_blue().save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    img = load_image(tmp_path / "r.jpg")
    assert img.size == (20, 40)  # stored 40x20, displayed upright as 20x40
    top, bottom = np.asarray(img)[2, 10], np.asarray(img)[-3, 10]
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # left (red) became the top
    # the score is that of the upright picture
    with Image.open(tmp_path / "r.jpg") as raw:
        raw.transpose(Image.ROTATE_270).save(tmp_path / "upright.png")
    p = amnet.load(tiny_checkpoint)
    a, b = p.predict(str(tmp_path / "r.jpg")), p.predict(str(tmp_path / "upright.png"))
    assert (a.width, a.height) == (20, 40)
    assert a.score == pytest.approx(b.score, abs=1e-6)


def test_conversions_are_sensible(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    assert tuple(np.asarray(load_image(tmp_path / "c.jpg"))[4, 4]) == pytest.approx(
        (255, 0, 0), abs=12
    )  # CMYK red -> RGB red
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "w.png")
    assert np.asarray(load_image(tmp_path / "w.png")).min() == 255  # 16-bit white -> 255
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "t.png")
    assert np.asarray(load_image(tmp_path / "t.png")).min() == 255  # transparent -> white
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(load_image(tmp_path / "a.gif"))[4, 4]) == (255, 0, 0)  # 1st frame


def test_huge_jpeg_is_decoded_small_but_reports_its_real_size(tmp_path):
    Image.new("L", (10_000, 10_000), 90).save(tmp_path / "h.jpg", quality=50)
    img = load_image(tmp_path / "h.jpg", draft_size=448)
    assert max(img.size) <= 2000 and img.info["original_size"] == (10_000, 10_000)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    png_bomb(tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size < 200_000
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "b.png")
