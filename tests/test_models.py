"""Splittable models: every cut composes back to the unsplit model, in outputs and in gradients."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from hetsfl.models import MODEL_NAMES, SplittableModel, build_model, default_input_shape

torch.set_num_threads(1)

NUM_UNITS = {"cnn": 6, "vgg16": 15, "resnet18": 10}
BATCH = {"cnn": 4, "vgg16": 2, "resnet18": 2}  # small: every cut of the big models is checked
TOL = {"atol": 1e-5, "rtol": 1e-4}


def _batch(name: str, model: SplittableModel, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded (inputs, labels) batch for model."""
    gen = torch.Generator().manual_seed(seed)
    batch = BATCH.get(name, 4)
    x = torch.randn((batch, *model.input_shape), generator=gen)
    y = torch.randint(0, model.num_classes, (batch,), generator=gen)
    return x, y


def _grads(model: SplittableModel) -> dict[str, torch.Tensor]:
    """Parameter gradients by name (missing gradients fail the comparison)."""
    return {name: p.grad for name, p in model.named_parameters()}


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, or allclose within TOL (the equality check first: it is much faster on big tensors)."""
    return a.shape == b.shape and (torch.equal(a, b) or torch.allclose(a, b, **TOL))


def _assert_same_grads(got: dict, want: dict) -> None:
    """Same parameter names and allclose gradients; every gradient present."""
    assert got.keys() == want.keys()
    for name, grad in want.items():
        assert got[name] is not None, f"no gradient reached {name}"
        assert _close(got[name], grad), f"gradient of {name} differs by {(got[name] - grad).abs().max()}"


@pytest.fixture(scope="module", params=MODEL_NAMES)
def reference(request):
    """(name, pristine model, batch, unsplit logits, unsplit gradients, unsplit buffers after the pass)."""
    torch.manual_seed(0)
    model = build_model(request.param).train()
    x, y = _batch(request.param, model)
    ref = copy.deepcopy(model)
    logits = ref(x)
    F.cross_entropy(logits, y).backward()
    buffers = {name: b.clone() for name, b in ref.named_buffers()}
    return request.param, model, (x, y), logits.detach(), _grads(ref), buffers


def test_num_units_and_names():
    assert {n: build_model(n).num_units for n in MODEL_NAMES} == NUM_UNITS
    assert build_model("cnn").unit_names == ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2"]
    vgg = build_model("vgg16").unit_names
    assert vgg[:3] == ["conv1_1", "conv1_2", "conv2_1"] and vgg[-3:] == ["conv5_3", "fc1", "fc2"]
    res = build_model("resnet18").unit_names
    assert res == ["stem"] + [f"layer{s}_{b}" for s in range(1, 5) for b in range(2)] + ["head"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_param_keys_and_no_bare_units(name):
    model = build_model(name)
    assert all(key.startswith("units.") for key in model.state_dict())
    assert {key.split(".")[1] for key in model.state_dict()} <= set(model.unit_names)
    # Only the cnn's max-pool units may be parameterless.
    bare = [n for n, unit in model.units.items() if not list(unit.parameters())]
    assert bare == (["pool1", "pool2"] if name == "cnn" else [])


def test_vgg_pools_at_end_of_each_stage():
    model = build_model("vgg16")
    last = [n for n, unit in model.units.items() if isinstance(unit[-1], torch.nn.MaxPool2d)]
    assert last == ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"]


def test_split_composition_every_cut(reference):
    """client/server at each cut: same logits, same gradients, same BN statistics as the unsplit model."""
    name, pristine, (x, y), want_logits, want_grads, want_buffers = reference
    for cut in range(NUM_UNITS[name] + 1):
        model = copy.deepcopy(pristine)
        client, server = model.split(cut)
        assert len(client) == cut and len(server) == NUM_UNITS[name] - cut
        logits = server(client(x))
        torch.testing.assert_close(logits, want_logits, **TOL)
        F.cross_entropy(logits, y).backward()
        _assert_same_grads(_grads(model), want_grads)
        buffers = dict(model.named_buffers())
        assert buffers.keys() == want_buffers.keys()
        assert all(_close(buffers[k], want_buffers[k].to(buffers[k].dtype)) for k in buffers)


def test_real_sfl_pattern_every_cut(reference):
    """Detached smashed data -> server forward/backward -> client backward with the smashed gradient."""
    name, pristine, (x, y), want_logits, want_grads, _ = reference
    for cut in range(NUM_UNITS[name] + 1):
        model = copy.deepcopy(pristine)
        client, server = model.split(cut)
        smashed = client(x)
        received = smashed.detach().requires_grad_(True)
        logits = server(received)
        F.cross_entropy(logits, y).backward()
        if cut > 0:
            smashed.backward(received.grad)
        torch.testing.assert_close(logits, want_logits, **TOL)
        _assert_same_grads(_grads(model), want_grads)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_split_shares_parameters(name):
    model = build_model(name)
    cut = model.num_units // 2
    client, server = model.split(cut)
    own = {id(p) for p in model.parameters()}
    halves = [{id(p) for p in part.parameters()} for part in (client, server)]
    assert halves[0] | halves[1] == own and not halves[0] & halves[1]
    first = model.units[model.unit_names[0]]
    assert client[0] is first and model.unit_range(0, 1)[0] is first


def test_forward_to_from_every_cut(reference):
    name, pristine, (x, _), _, _, _ = reference
    model = copy.deepcopy(pristine).eval()
    with torch.no_grad():
        whole = model(x)
        assert model.forward_to(x, 0) is x
        for cut in range(NUM_UNITS[name] + 1):
            h = model.forward_to(x, cut)
            torch.testing.assert_close(h, model.unit_range(0, cut)(x), **TOL)
            torch.testing.assert_close(model.forward_from(h, cut), whole, **TOL)
        assert model.forward_from(whole, NUM_UNITS[name]) is whole


@pytest.mark.parametrize("cut", [-1, 7, 100, 1.5, "2", True, None])
def test_invalid_cut_raises(cut):
    model = build_model("cnn")
    for call in (
        model.split,
        lambda c: model.forward_to(torch.zeros(1, 1, 28, 28), c),
        lambda c: model.forward_from(torch.zeros(1, 1, 28, 28), c),
    ):
        with pytest.raises(ValueError, match=r"0\.\.6"):
            call(cut)


def test_unit_range_validation():
    model = build_model("cnn")
    assert [n for n, _ in model.unit_range(1, 4).named_children()] == ["pool1", "conv2", "pool2"]
    with pytest.raises(ValueError, match="start <= stop"):
        model.unit_range(4, 2)
    with pytest.raises(ValueError, match=r"0\.\.6"):
        model.unit_range(0, 7)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="cnn, vgg16, resnet18"):
        build_model("alexnet")
    with pytest.raises(ValueError, match="cnn, vgg16, resnet18"):
        default_input_shape("alexnet")


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 0}, {"input_shape": (1, 28)}, {"input_shape": (1, 0, 28)}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        build_model("cnn", **kwargs)


def test_bad_units():
    with pytest.raises(ValueError, match="duplicate"):
        SplittableModel([("a", torch.nn.ReLU()), ("a", torch.nn.ReLU())], (1, 2, 2), 2)
    with pytest.raises(ValueError, match="at least one"):
        SplittableModel([], (1, 2, 2), 2)


def test_default_shapes_and_outputs():
    assert default_input_shape("cnn") == (1, 28, 28)
    assert default_input_shape("vgg16") == default_input_shape("resnet18") == (3, 32, 32)
    for name, shape in [("cnn", (1, 28, 28)), ("cnn", (3, 32, 32)), ("resnet18", (3, 32, 32))]:
        model = build_model(name, num_classes=7, input_shape=shape).eval()
        assert model.input_shape == shape and model.num_classes == 7
        with torch.no_grad():
            assert model(torch.zeros(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_construction_is_deterministic(name):
    def state(seed):
        torch.manual_seed(seed)
        return build_model(name).state_dict()

    a, b, c = state(3), state(3), state(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
