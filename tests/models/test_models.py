"""Tests of the DEQ model zoo (jiio_cli.models): shapes, dtypes, contraction at init,
per-sample independence, weight norm, configs and the registry."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from jiio_cli.engine import SolverConfig, fixed_input_map, forward_solve
from jiio_cli.models import (
    ClassifierConfig,
    ConvDEQCell,
    DecoderConfig,
    DEQClassifier,
    DEQDecoder,
    FiLMClassifier,
    FiLMConvDEQCell,
    ImageInjection,
    LatentInjection,
    MetaConfig,
    build_model,
    config_from_dict,
)
from jiio_cli.models.layers import has_weight_norm
from jiio_cli.models.precision import AutocastCell

Cell = Callable[[Tensor, Tensor], Tensor]


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # The tensors here are tiny: intra-op threads only add spin-waiting, which turns into
    # 20× slowdowns when the CPUs are shared with other processes. Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rel_residual(z_next: Tensor, z: Tensor) -> Tensor:
    """Per-sample ‖f(z) − z‖ / ‖f(z)‖, shape (B,)."""
    return (z_next - z).flatten(1).norm(dim=1) / z_next.flatten(1).norm(dim=1)


def naive_solve(cell: Cell, z: Tensor, x: Tensor, max_iter: int = 200) -> tuple[Tensor, Tensor]:
    """Plain iteration z ← f(z, x); returns the last iterate and per-sample residuals."""
    with torch.no_grad():
        for _ in range(max_iter):
            z_next = cell(z, x)
            res = rel_residual(z_next, z)
            z = z_next
            if res.max() < 1e-4:
                break
    return z, res


# Small configurations keep the file fast; the defaults are covered where it matters.
SMALL_DEC = DecoderConfig(latent_dim=8, channels=16, image_size=12, groups=4)
SMALL_CLS = ClassifierConfig(num_classes=3, image_size=12, channels=16, groups=4)
SMALL_META = MetaConfig(context_dim=8, ways=3, channels=16, image_size=12, groups=4)


def decoder_case(config: DecoderConfig, batch: int, seed: int = 0) -> tuple[DEQDecoder, Tensor]:
    torch.manual_seed(seed)
    model = DEQDecoder(config)
    return model, torch.randn(batch, config.latent_dim, generator=gen(seed + 1))


def classifier_case(
    config: ClassifierConfig, batch: int, seed: int = 0
) -> tuple[DEQClassifier, Tensor]:
    torch.manual_seed(seed)
    model = DEQClassifier(config)
    shape = (batch, config.image_channels, config.image_size, config.image_size)
    return model, torch.rand(shape, generator=gen(seed + 1))


def meta_case(config: MetaConfig, batch: int, seed: int = 0) -> tuple[FiLMClassifier, Tensor]:
    """Model with random images bound; returns it and a random context (B, D)."""
    torch.manual_seed(seed)
    model = FiLMClassifier(config)
    shape = (batch, config.image_channels, config.image_size, config.image_size)
    model.bind(torch.rand(shape, generator=gen(seed + 1)))
    return model, torch.randn(batch, config.context_dim, generator=gen(seed + 2))


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("config", "state_side"),
    [
        (SMALL_DEC, 12),
        (dataclasses.replace(SMALL_DEC, half_resolution=True, image_size=13), 7),
        (dataclasses.replace(SMALL_DEC, image_channels=3, image_size=20), 20),
    ],
)
def test_decoder_shapes(config: DecoderConfig, state_side: int) -> None:
    model, x = decoder_case(config, batch=3)
    z = model.init_state(3)
    assert z.shape == (3, config.channels, state_side, state_side)
    assert model.state_shape == z.shape[1:]
    assert torch.count_nonzero(z) == 0
    z1 = model.cell(z, x)
    assert z1.shape == z.shape
    image = model.head(z1)
    assert image.shape == (3, config.image_channels, config.image_size, config.image_size)
    assert image.min() >= 0.0 and image.max() <= 1.0


@pytest.mark.parametrize(
    ("config", "state_side"),
    [
        (SMALL_CLS, 6),
        (dataclasses.replace(SMALL_CLS, image_size=13), 7),
        (dataclasses.replace(SMALL_CLS, stride=1, image_channels=3, num_classes=7), 12),
    ],
)
def test_classifier_shapes(config: ClassifierConfig, state_side: int) -> None:
    model, x = classifier_case(config, batch=2)
    z = model.cell(model.init_state(2), x)
    assert z.shape == (2, config.channels, state_side, state_side)
    assert model.head(z).shape == (2, config.num_classes)
    assert model.features(z).shape == (2, config.channels * config.pool_grid**2)
    # The read-out sees where things are: a mirrored state gives other features (a
    # global mean would not notice).
    assert not torch.allclose(model.features(z), model.features(z.flip(-1)))


@pytest.mark.parametrize("config", [SMALL_META, dataclasses.replace(SMALL_META, stride=1, ways=4)])
def test_meta_shapes_per_image_and_per_task(config: MetaConfig) -> None:
    side = -(-config.image_size // config.stride)
    model, v = meta_case(config, batch=2)
    z = model.cell(model.init_state(2), v)
    assert z.shape == (2, config.channels, side, side)
    assert model.head(z).shape == (2, config.ways)
    assert model.features(z).shape == (2, config.channels)

    tasks = torch.rand(2, 5, 1, config.image_size, config.image_size, generator=gen(3))
    model.bind(tasks)
    assert model.state_shape == (5, config.channels, side, side)
    z = model.cell(model.init_state(2), v)
    assert z.shape == (2, 5, config.channels, side, side)
    assert model.head(z).shape == (2, 5, config.ways)
    assert model.features(z).shape == (2, 5, config.channels)


def test_injection_sizes() -> None:
    latent = LatentInjection(5, 8, 10, 7, groups=4)
    assert latent.spatial_size == (10, 7)
    assert latent(torch.randn(2, 5)).shape == (2, 8, 10, 7)
    image = ImageInjection(3, 8, stride=2, groups=4, image_size=(9, 12))
    assert image.spatial_size == (5, 6)
    assert image.output_size(28, 28) == (14, 14)
    assert image(torch.rand(2, 3, 9, 12)).shape == (2, 8, 5, 6)
    with pytest.raises(ValueError, match="9×12"):
        image(torch.rand(2, 3, 12, 12))
    with pytest.raises(RuntimeError, match="image_size"):
        _ = ImageInjection(3, 8, groups=4).spatial_size


# --------------------------------------------------------------------------- dtypes/devices


def test_float64_end_to_end() -> None:
    model, x = decoder_case(SMALL_DEC, batch=2)
    model = model.double()
    z = model.init_state(2)
    assert z.dtype == torch.float64
    z, _ = naive_solve(model.cell, z, x.double(), max_iter=5)
    assert z.dtype == torch.float64 and model.head(z).dtype == torch.float64

    cls, img = classifier_case(SMALL_CLS, batch=2)
    cls = cls.double()
    logits = cls.head(cls.cell(cls.init_state(2), img.double()))
    assert logits.dtype == torch.float64

    meta = FiLMClassifier(SMALL_META).double()
    meta.bind(torch.rand(2, 1, 12, 12, dtype=torch.float64))
    z = meta.cell(meta.init_state(2), torch.zeros(2, 8, dtype=torch.float64))
    assert z.dtype == torch.float64


def test_float32_and_float64_agree() -> None:
    model, x = decoder_case(SMALL_DEC, batch=2)
    z32, _ = naive_solve(model.cell, model.init_state(2), x, max_iter=3)
    model64 = model.double()
    z64, _ = naive_solve(model64.cell, model64.init_state(2), x.double(), max_iter=3)
    torch.testing.assert_close(z32.double(), z64, atol=1e-4, rtol=1e-4)


def test_init_state_honours_device_and_dtype() -> None:
    model = DEQClassifier(SMALL_CLS)
    z = model.init_state(4, device="cpu", dtype=torch.float64)
    assert z.dtype == torch.float64 and z.device.type == "cpu" and z.shape[0] == 4


@pytest.mark.parametrize("kind", ["decoder", "classifier", "meta"])
def test_nothing_is_pinned_to_a_device(kind: str) -> None:
    # The meta device has no data: any tensor created on a hard-coded device (CPU or
    # CUDA) inside the models would fail to combine with the meta tensors here.
    model = build_model(kind, {"channels": 16, "groups": 4}).to("meta")
    z = model.init_state(2)
    assert z.device.type == "meta"
    if kind == "decoder":
        x = torch.zeros(2, 64, device="meta")
    elif kind == "classifier":
        x = torch.zeros(2, 1, 28, 28, device="meta")
    else:
        model.bind(torch.zeros(2, 1, 28, 28, device="meta"))
        x = torch.zeros(2, 64, device="meta")
    out = model.head(model.cell(z, x))
    assert out.device.type == "meta"


# --------------------------------------------------------------------------- contraction


@pytest.mark.parametrize(
    "case",
    [
        lambda: decoder_case(SMALL_DEC, 4),
        lambda: decoder_case(dataclasses.replace(SMALL_DEC, half_resolution=True), 4, seed=1),
        lambda: decoder_case(DecoderConfig(), 2, seed=2),
        lambda: classifier_case(SMALL_CLS, 4),
        lambda: classifier_case(dataclasses.replace(SMALL_CLS, stride=1), 4, seed=1),
        lambda: classifier_case(ClassifierConfig(), 2, seed=2),
        lambda: meta_case(SMALL_META, 4),
        lambda: meta_case(MetaConfig(), 2, seed=2),
    ],
    ids=[
        "decoder",
        "decoder-half",
        "decoder-default",
        "classifier",
        "classifier-stride1",
        "classifier-default",
        "meta",
        "meta-default",
    ],
)
def test_untrained_cell_is_contractive(case: Callable[[], tuple[nn.Module, Tensor]]) -> None:
    model, x = case()
    z, res = naive_solve(model.cell, model.init_state(x.shape[0]), x, max_iter=200)
    assert res.max() < 1e-4, f"naive iteration stalled at residual {res.max():.2e}"
    assert torch.isfinite(z).all()
    # A genuine fixed point depends on x: another input gives another equilibrium.
    z_other, _ = naive_solve(model.cell, model.init_state(x.shape[0]), x.roll(1, 0), 200)
    assert (z - z_other).flatten(1).norm(dim=1).min() > 1e-2


def test_decoder_converges_from_zero_latent() -> None:
    # JIIO starts x from zeros: the cell must be well behaved there too.
    model, _ = decoder_case(SMALL_DEC, 2)
    _, res = naive_solve(model.cell, model.init_state(2), torch.zeros(2, SMALL_DEC.latent_dim))
    assert res.max() < 1e-4


# --------------------------------------------------------------------------- independence


def _assert_row0_unchanged(run: Callable[[Tensor], Tensor], x: Tensor) -> None:
    """``run(x)[0]`` must not depend on x[1:], while ``run(x)[1]`` must."""
    x2 = x.clone()
    # Not an affine map of x: GroupNorm makes rows invariant to z ↦ a·z + b.
    x2[1:] = x[1:].flip(-1) + x[1:].square()
    out, out2 = run(x), run(x2)
    torch.testing.assert_close(out[0], out2[0], rtol=0, atol=0)
    assert not torch.allclose(out[1], out2[1])


def _assert_cell_and_head_per_sample(model: Any, x: Tensor) -> None:
    """Row 0 of f(z, x) and of the head ignores the other rows of x and of z."""
    z0 = torch.randn(x.shape[0], *model.state_shape, generator=gen(5))
    _assert_row0_unchanged(lambda xx: model.cell(z0, xx), x)
    _assert_row0_unchanged(lambda zz: model.cell(zz, x), z0)
    _assert_row0_unchanged(model.head, z0)


def test_per_sample_independence_decoder() -> None:
    _assert_cell_and_head_per_sample(*decoder_case(SMALL_DEC, 3))


def test_per_sample_independence_classifier() -> None:
    model, x = classifier_case(SMALL_CLS, 3)
    _assert_cell_and_head_per_sample(model, x)
    # Through a whole solve as well: the equilibrium of row 0 ignores the other rows.
    _assert_row0_unchanged(
        lambda xx: naive_solve(model.cell, model.init_state(3), xx, max_iter=10)[0], x
    )


def test_per_sample_independence_meta() -> None:
    model, v = meta_case(SMALL_META, 3)
    z0 = torch.randn(3, *model.state_shape, generator=gen(5))
    _assert_row0_unchanged(lambda vv: model.cell(z0, vv), v)
    _assert_row0_unchanged(lambda zz: model.cell(zz, v), z0)

    images = torch.rand(3, 1, 12, 12, generator=gen(6))

    def bound_run(imgs: Tensor) -> Tensor:
        model.bind(imgs)
        return model.cell(z0, v)

    _assert_row0_unchanged(bound_run, images)


# --------------------------------------------------------------------------- FiLM


def test_film_zero_context_is_the_unmodulated_cell() -> None:
    torch.manual_seed(0)
    injection = ImageInjection(1, 16, stride=2, groups=4, image_size=12)
    film = FiLMConvDEQCell(16, 8, injection, groups=4)
    plain = ConvDEQCell(16, injection, groups=4)
    plain.block.load_state_dict(film.block.state_dict())
    images = torch.rand(3, 1, 12, 12, generator=gen(1))
    z = torch.randn(3, 16, 6, 6, generator=gen(2))
    film.bind(images)
    expected = plain(z, images)
    torch.testing.assert_close(film(z, torch.zeros(3, 8)), expected, rtol=0, atol=0)
    # ... and a non-zero context does modulate it.
    moved = film(z, torch.randn(3, 8, generator=gen(3)))
    assert (moved - expected).flatten(1).norm(dim=1).min() > 1e-3


def test_film_zero_context_after_training_like_update() -> None:
    # The identity property must not rely on the initialisation of the FiLM map.
    torch.manual_seed(0)
    film = FiLMConvDEQCell(16, 8, ImageInjection(1, 16, groups=4, image_size=6), groups=4)
    z = torch.randn(2, 16, 6, 6, generator=gen(1))
    film.bind(torch.rand(2, 1, 6, 6, generator=gen(2)))
    before = film(z, torch.zeros(2, 8))
    with torch.no_grad():
        film.film.weight.normal_(0.0, 5.0)
    torch.testing.assert_close(film(z, torch.zeros(2, 8)), before, rtol=0, atol=0)


def test_film_task_rows_share_one_context() -> None:
    model, _ = meta_case(SMALL_META, 2)
    tasks = torch.rand(2, 4, 1, 12, 12, generator=gen(4))
    v = torch.randn(2, 8, generator=gen(5))
    model.bind(tasks)
    z = torch.randn(2, *model.state_shape, generator=gen(6))
    per_task = model.cell(z, v)
    model.bind(tasks.flatten(0, 1))
    per_image = model.cell(z.flatten(0, 1), v.repeat_interleave(4, dim=0))
    torch.testing.assert_close(per_task.flatten(0, 1), per_image)


def test_film_requires_bind_and_matching_rows() -> None:
    model = FiLMClassifier(SMALL_META)
    z = model.init_state(2)
    with pytest.raises(RuntimeError, match="bind"):
        model.cell(z, torch.zeros(2, 8))
    model.bind(torch.rand(2, 1, 12, 12))
    with pytest.raises(ValueError, match="rows"):
        model.init_state(3)
    with pytest.raises(ValueError):
        model.cell(z, torch.zeros(3, 8))
    model.unbind()
    assert model.cell.bound is None


def test_film_bind_keeps_graph_for_outer_training() -> None:
    model, v = meta_case(SMALL_META, 2)
    z = model.cell(model.init_state(2), v)
    model.head(z).sum().backward()
    conv = model.cell.image_injection.conv
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- weight norm


@pytest.mark.parametrize("kind", ["decoder", "classifier", "meta"])
def test_weight_norm_variant(kind: str) -> None:
    small = {"decoder": SMALL_DEC, "classifier": SMALL_CLS, "meta": SMALL_META}[kind]
    plain_dict = small.to_dict()
    torch.manual_seed(0)
    plain = build_model(kind, plain_dict)
    torch.manual_seed(0)
    normed = build_model(kind, {**plain_dict, "weight_norm": True})
    block = normed.cell.block
    assert has_weight_norm(block.conv1) and has_weight_norm(block.conv2)
    assert not has_weight_norm(plain.cell.block.conv1)
    # Weight norm is a reparametrisation: at init g = ‖v‖, so the weights are unchanged.
    torch.testing.assert_close(block.conv1.weight, plain.cell.block.conv1.weight)
    # Gradients reach the magnitude g and the direction v.
    z = torch.randn(2, *normed.cell.state_shape, generator=gen(1))
    if kind == "meta":
        normed.bind(torch.rand(2, 1, 12, 12, generator=gen(2)))
        x = torch.randn(2, 8, generator=gen(3))
    elif kind == "decoder":
        x = torch.randn(2, 8, generator=gen(3))
    else:
        x = torch.rand(2, 1, 12, 12, generator=gen(3))
    normed.cell(z, x).square().sum().backward()
    weight = block.conv1.parametrizations.weight
    g, v = weight.original0, weight.original1
    assert g.grad is not None and v.grad is not None and g.grad.abs().sum() > 0


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "config",
    [
        DecoderConfig(latent_dim=16, channels=24, image_channels=3, weight_norm=True),
        DecoderConfig(half_resolution=True),
        ClassifierConfig(num_classes=4, stride=1, groups=4),
        MetaConfig(context_dim=400, ways=20),
    ],
)
def test_config_round_trip_through_json(config: DecoderConfig) -> None:
    data = json.loads(json.dumps(config.to_dict()))
    restored = type(config).from_dict(data)
    assert restored == config
    assert restored.to_dict() == config.to_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.channels = 8  # type: ignore[misc]


def test_config_from_dict_uses_defaults_for_missing_keys() -> None:
    assert DecoderConfig.from_dict({"latent_dim": 10}) == DecoderConfig(latent_dim=10)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"latent_dim": 8, "chanels": 16}, "chanels"),
        ({"channels": 30}, "divide"),
        ({"channels": 16.0}, "int"),
        ({"channels": True}, "int"),
        ({"weight_norm": 1}, "bool"),
        ({"latent_dim": 0}, "positive"),
        ({"image_size": "28"}, "int"),
    ],
)
def test_decoder_config_rejects_bad_input(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DecoderConfig.from_dict(data)


def test_classifier_config_rejects_bad_stride() -> None:
    with pytest.raises(ValueError, match="stride"):
        ClassifierConfig.from_dict({"stride": 3})
    with pytest.raises(ValueError, match="stride"):
        MetaConfig(stride=4)


def test_build_model_builds_each_kind_with_its_config() -> None:
    decoder = build_model("decoder", {"latent_dim": 12, "channels": 16, "groups": 4})
    assert isinstance(decoder, DEQDecoder)
    assert decoder.config == DecoderConfig(latent_dim=12, channels=16, groups=4)
    assert decoder.cell.injection.latent_dim == 12
    classifier = build_model("classifier", {"num_classes": 4})
    assert isinstance(classifier, DEQClassifier) and classifier.head.linear.out_features == 4
    meta = build_model("meta", {"ways": 3, "context_dim": 20})
    assert isinstance(meta, FiLMClassifier) and meta.cell.context_dim == 20
    assert isinstance(build_model("meta"), FiLMClassifier)


@pytest.mark.parametrize(
    ("kind", "data", "message"),
    [
        ("decoder", {"num_classes": 10}, "num_classes"),
        ("classifier", {"latent_dim": 64}, "latent_dim"),
        ("meta", {"ways": 5, "bogus": 1}, "bogus"),
        ("vae", {}, "unknown model kind"),
        ("classifier", ["channels"], "mapping"),
    ],
)
def test_build_model_rejects_unknown_kind_and_keys(kind: str, data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(kind, data)  # type: ignore[arg-type]


def test_config_from_dict_and_model_config_agree() -> None:
    data = {"channels": 16, "groups": 4, "ways": 2}
    assert config_from_dict("meta", data) == build_model("meta", data).config


def test_bad_cell_wiring_is_reported() -> None:
    with pytest.raises(ValueError, match="channels"):
        ConvDEQCell(16, LatentInjection(4, 8, 5, 5, groups=4), groups=4)
    with pytest.raises(ValueError, match="divide"):
        ConvDEQCell(16, LatentInjection(4, 16, 5, 5, groups=4), groups=3)
    cell = ConvDEQCell(16, LatentInjection(4, 16, 5, 5, groups=4), groups=4)
    with pytest.raises(ValueError, match="shape"):
        cell(torch.zeros(2, 16, 4, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        cell(cell.init_state(2), torch.zeros(2, 5))


def test_models_reject_a_config_of_another_kind() -> None:
    with pytest.raises(TypeError, match="DecoderConfig"):
        DEQDecoder(ClassifierConfig())  # type: ignore[arg-type]


def test_meta_config_readout_is_checked_and_defaults_to_the_head() -> None:
    assert MetaConfig.from_dict({"context_dim": 4}).readout == "head"  # older checkpoints
    with pytest.raises(ValueError, match="readout"):
        MetaConfig(readout="nearest")
    model = FiLMClassifier(MetaConfig(context_dim=4, ways=3, channels=8, readout="centroids"))
    assert "log_distance_scale" in model.state_dict()
    assert "log_distance_scale" not in FiLMClassifier(MetaConfig(context_dim=4)).state_dict()


@pytest.mark.parametrize("case", [decoder_case, classifier_case])
def test_fixed_input_map_computes_the_injection_once_and_equals_f(
    case: Callable[..., tuple[nn.Module, Tensor]],
) -> None:
    config = SMALL_DEC if case is decoder_case else SMALL_CLS
    model, x = case(config, 3, seed=int(torch.randint(0, 10_000, ())))
    cell = model.cell
    calls: list[int] = []
    cell.injection.register_forward_hook(lambda *_: calls.append(1))
    z = torch.randn(3, *cell.state_shape)
    with torch.no_grad():
        step = fixed_input_map(cell, x)
        first, second = step(z), step(2 * z)
        assert len(calls) == 1
        assert torch.equal(first, cell(z, x))
        assert torch.equal(second, cell(2 * z, x))
        # A forward solve takes the same iterates as through the plain f(z, x).
        config = SolverConfig(memory=5, max_iter=40, tol=1e-6)
        fast = forward_solve(cell, x, torch.zeros_like(z), config)
        plain = forward_solve(lambda z_, x_: cell(z_, x_), x, torch.zeros_like(z), config)
    assert torch.equal(fast.z, plain.z)
    assert torch.equal(fast.stats.iterations, plain.stats.iterations)


def test_fixed_input_map_under_autocast_matches_the_autocast_cell() -> None:
    model, x = decoder_case(SMALL_DEC, 2)
    cell = AutocastCell(model.cell, torch.bfloat16, "cpu")
    z = torch.randn(2, *model.cell.state_shape)
    with torch.no_grad():
        out = fixed_input_map(cell, x)(z)
        assert out.dtype == z.dtype
        assert torch.equal(out, cell(z, x))
    # A plain callable without the method is called as f(z, x).
    assert torch.equal(fixed_input_map(lambda a, b: a + b.sum(), x)(z), z + x.sum())
