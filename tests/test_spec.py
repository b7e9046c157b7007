import json

import pytest

from zoo.spec import ImageSpec, SequenceSpec, Spec, SpecError


def mnist_spec() -> Spec:
    return Spec(
        family="mnist-mlp",
        task="classification",
        labels=tuple(str(i) for i in range(10)),
        image=ImageSpec(color_mode="L", height=28, width=28, mean=(0.1307,), std=(0.3081,), layout="NF"),
    )


def test_spec_round_trips_through_json():
    spec = mnist_spec()
    again = Spec.from_json(spec.to_json())
    assert again == spec
    assert again.image.input_shape() == [784]
    assert json.loads(spec.to_json())["image"]["mean"] == [0.1307]


def test_forecast_spec_state_names():
    spec = Spec(family="sine-rnn", task="forecast", sequence=SequenceSpec(cell="lstm", hidden_size=16), output="next_value")
    assert Spec.from_dict(spec.to_dict()).sequence.state_names == ["h", "c"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"labels": []}, "needs 'image' and 'labels'"),
        ({"task": "segmentation"}, "unknown task"),
        ({"version": 99}, "spec version 99"),
        ({"bogus": 1}, "malformed spec"),
    ],
)
def test_invalid_specs_name_the_problem(change, message):
    data = {**mnist_spec().to_dict(), **change}
    with pytest.raises(SpecError, match=message):
        Spec.from_dict(data)


def test_mean_std_must_match_channels():
    with pytest.raises(SpecError, match="one value per channel"):
        Spec(family="x", task="classification", labels=("a",),
             image=ImageSpec(color_mode="RGB", height=32, width=32, mean=(0.5,), std=(0.5,)))


def test_imagenet_sized_label_sets_pass_and_oversized_ones_name_the_limit():
    """Labels travel in every classify answer and every index call (issue 25.7d): 10 labels of 2 MiB
    made a 3 KB request a 96 MiB answer. Checked wherever a spec is read: export and load."""
    from zoo.spec import MAX_LABEL_CHARS, MAX_LABELS

    base = mnist_spec().to_dict()
    assert Spec.from_dict({**base, "labels": [f"n{i:08d} {'x' * 200}" for i in range(1000)]}).num_classes == 1000
    assert Spec.from_dict({**base, "labels": [str(i) for i in range(MAX_LABELS)]}).num_classes == 4096
    with pytest.raises(SpecError, match="4097 labels, more than the limit of 4096"):
        Spec.from_dict({**base, "labels": [str(i) for i in range(MAX_LABELS + 1)]})
    with pytest.raises(SpecError, match=r"label 3 has 2097152 characters, more than the limit of 256"):
        Spec.from_dict({**base, "labels": ["a", "b", "c", "x" * 2**21]})
    assert Spec.from_dict({**base, "labels": ["y" * MAX_LABEL_CHARS]}).num_classes == 1
    with pytest.raises(SpecError, match="label 1 is a int, not a string"):
        Spec.from_dict({**base, "labels": ["a", 7]})
