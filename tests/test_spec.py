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
