"""Property tests of option parsing through the real commands: any value of a numeric
option, any budget list, any noise range either runs or gets one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from classifiers import save_classifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from jiio_cli.cli.app import app
from jiio_cli.cli.commands.train import parse_sigma
from jiio_cli.config import parse_eps_list
from jiio_cli.errors import UsageError

runner = CliRunner(env={"NO_COLOR": "1"})
_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("clf") / "clf.safetensors")


def _one_line_usage_error(result) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")


@_SETTINGS
@given(
    flag=st.sampled_from(
        ["--batch-size", "--iterations", "--memory", "--pgd-steps", "--restarts", "--examples"]
    ),
    value=st.integers(-(10**6), 0),
)
def test_attack_rejects_non_positive_counts(classifier: Path, flag: str, value: int) -> None:
    result = runner.invoke(app, ["attack", "-c", str(classifier), flag, str(value)])
    _one_line_usage_error(result)
    assert flag in result.stderr


@_SETTINGS
@given(flag=st.sampled_from(["--alpha-x", "--alpha-x-final", "--pgd-step-size"]), value=st.floats())
def test_attack_step_sizes_outside_range_are_refused(
    classifier: Path, flag: str, value: float
) -> None:
    if 0 < value <= 10:
        return  # valid: running the attack is covered elsewhere
    result = runner.invoke(app, ["attack", "-c", str(classifier), flag, repr(value)])
    _one_line_usage_error(result)


@_SETTINGS
@given(
    flag=st.sampled_from(["--epochs", "--batch-size", "--image-size", "--width", "--inner-iters"]),
    value=st.integers(-(10**6), 1),
    task=st.sampled_from(["denoise", "adversarial"]),
)
def test_train_rejects_sizes_below_their_minimum(flag: str, value: int, task: str) -> None:
    if value == 1 and flag in ("--epochs", "--batch-size"):
        return  # the smallest valid values
    result = runner.invoke(app, ["train", "--task", task, flag, str(value), "--device", "cpu"])
    _one_line_usage_error(result)


@given(
    st.lists(
        st.one_of(
            st.floats(0, 5).map(repr),
            st.tuples(st.integers(0, 99), st.integers(1, 999)).map(lambda t: f"{t[0]}/{t[1]}"),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_eps_lists_parse_item_by_item(items: list[str]) -> None:
    values = parse_eps_list(",".join(items))
    assert len(values) == len(items)
    for item, value in zip(items, values, strict=True):
        if "/" in item:
            p, q = item.split("/")
            assert value == int(p) / int(q)
        else:
            assert value == float(item)


@given(st.floats(0, 9.99), st.floats(0, 9.99))
def test_sigma_ranges_are_ordered_or_refused(low: float, high: float) -> None:
    text = f"{low!r}:{high!r}"
    if low <= high:
        assert parse_sigma(text) == (low, high)
    else:
        with pytest.raises(UsageError):
            parse_sigma(text)


@given(st.text(min_size=1, max_size=12))
def test_sigma_text_never_escapes_as_another_error(text: str) -> None:
    try:
        value = parse_sigma(text)
    except UsageError:
        return
    values = value if isinstance(value, tuple) else (value,)
    assert all(0 <= v < 10 for v in values)
