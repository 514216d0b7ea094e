"""Trunks: frozen means frozen; the real trunks are real ImageNet models; verified downloads."""

import dataclasses
import functools
import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from PIL import Image
from torch import nn

from amnet import fileio as hub
from amnet.inference.images import to_tensor
from amnet.trunks import registry as backbone
from amnet.trunks.registry import WeightSource, create_trunk, get_trunk_spec, load_classifier

CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


# --- frozen means frozen (tiny trunk with BatchNorm) ------------------------------------------


class Model(nn.Module):
    def __init__(self, trunk: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.trunk, self.head = trunk, head

    def forward(self, x):
        return self.head(self.trunk(x))


@pytest.fixture
def model(tiny_trunk_name, tiny_head):
    return Model(create_trunk(tiny_trunk_name), tiny_head)


def test_trunk_has_no_trainable_parameters(model):
    assert all(not p.requires_grad for p in model.trunk.parameters())
    assert any(p.requires_grad for p in model.head.parameters())


def test_train_mode_cannot_unfreeze_the_trunk(model):
    model.train()
    assert model.head.training
    assert not any(m.training for m in model.trunk.modules())
    model.trunk.train(True)
    assert not any(m.training for m in model.trunk.modules())


def test_batchnorm_statistics_do_not_change_in_train_mode(model):
    bns = [m for m in model.trunk.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns, "the tiny trunk must have BatchNorm for this test to mean something"
    before = [
        (b.running_mean.clone(), b.running_var.clone(), int(b.num_batches_tracked)) for b in bns
    ]
    model.train()
    model(torch.randn(4, 3, 224, 224) * 3 + 1)  # far from the stored statistics
    for b, (mean, var, n) in zip(bns, before, strict=True):
        assert torch.equal(b.running_mean, mean) and torch.equal(b.running_var, var)
        assert int(b.num_batches_tracked) == n


def test_gradients_reach_every_head_parameter_and_nothing_in_the_trunk(model):
    model.train()
    out = model(torch.randn(3, 3, 224, 224))
    (out.raw.pow(2).mean() + out.attention.pow(2).mean()).backward()
    for name, p in model.head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.trunk.parameters())


# --- the real trunks are ImageNet classifiers --------------------------------------------------


def top5(net: nn.Module, name: str, image: Image.Image) -> set[int]:
    x = to_tensor(image, get_trunk_spec(name).preprocess)[None]  # (1, 3, 224, 224)
    with torch.inference_mode():
        return set(net(x)[0].topk(5).indices.tolist())


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    return {"chelsea": Image.fromarray(data.chelsea()), "coffee": Image.fromarray(data.coffee())}


@pytest.fixture(scope="module")
def resnet152():
    return load_classifier("resnet152")


@pytest.fixture(scope="module")
def efficientnet_lite2():
    return load_classifier("efficientnet_lite2")


@pytest.mark.parametrize("trunk", ["resnet152", "efficientnet_lite2"])
def test_real_trunk_recognises_a_cat_and_a_coffee_cup(trunk, photos, request):
    net = request.getfixturevalue(trunk)
    assert top5(net, trunk, photos["chelsea"]) & CATS
    assert top5(net, trunk, photos["coffee"]) & COFFEE


# --- resnet50: download into the cache with a sha256 check (served on 127.0.0.1) --------------


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served_resnet50(tmp_path, monkeypatch):
    """A ResNet-50 state dict served over http://127.0.0.1; the registry entry points at it."""
    served = tmp_path / "served"
    served.mkdir()
    torch.manual_seed(0)
    state = backbone.resnet50().state_dict()
    torch.save(state, served / "resnet50-test.pth")
    digest = hashlib.sha256((served / "resnet50-test.pth").read_bytes()).hexdigest()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/resnet50-test.pth"
    monkeypatch.setenv("AMNET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AMNET_TRUNK_RESNET50", raising=False)

    def point_at(sha256: str) -> None:
        spec = dataclasses.replace(
            get_trunk_spec("resnet50"), weights=WeightSource(sha256=sha256, url=url)
        )
        monkeypatch.setitem(backbone._TRUNKS, "resnet50", spec)

    yield point_at, digest, state, server
    server.shutdown()
    server.server_close()


def test_resnet50_is_downloaded_verified_cached_and_loaded_strictly(served_resnet50, tmp_path):
    point_at, digest, state, server = served_resnet50
    point_at(digest[:8])  # a prefix, as in torchvision's file names
    trunk = create_trunk("resnet50")
    cached = tmp_path / "home" / "trunks" / "resnet50-test.pth"
    assert cached.is_file() and hub.sha256_file(cached) == digest
    assert torch.equal(trunk.net.conv1.weight, state["conv1.weight"])
    assert trunk(torch.zeros(1, 3, 224, 224)).shape == (1, 1024, 14, 14)
    server.shutdown()  # the second time comes from the cache, with no network
    assert torch.equal(
        create_trunk("resnet50").net.layer3[0].conv1.weight, state["layer3.0.conv1.weight"]
    )


def test_resnet50_with_a_wrong_hash_is_rejected_and_nothing_is_cached(served_resnet50, tmp_path):
    point_at, digest, _, _ = served_resnet50
    point_at("0" * 64 if not digest.startswith("0") else "f" * 64)
    with pytest.raises(hub.ChecksumError, match="expected"):
        create_trunk("resnet50")
    home = tmp_path / "home"
    assert not [p for p in home.rglob("*") if p.is_file()]  # no file, no temporary left over


def test_a_registry_entry_needs_a_hash(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        hub.download("http://127.0.0.1:9/x.pth", tmp_path / "x.pth", "")
