"""Consumer definitions load from TOML and fail with the file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestore.errors import ConfigError
from featurestore.stream.definition import load_definition

EXAMPLE = Path(__file__).parents[3] / "consumers" / "payments.toml"


def test_the_example_definition_loads() -> None:
    definition = load_definition(EXAMPLE.with_suffix(""))  # `consumers/payments` works
    assert definition.topics == ["payments"]
    assert definition.subject == "payments-value"
    assert definition.group_id == "fs-payments"
    assert definition.dlq_for("payments") == "payments.dlq"
    assert definition.sinks.offline.enabled


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('name = "x"\nsubject = "s"\n', "topics"),
        ('name = "x"\ntopics = []\nsubject = "s"\n', "topics"),
        ('name = "x"\ntopics = ["t"]\nsubject = "s"\nbatch_size = 0\n', "batch_size"),
        ('name = "x"\ntopics = ["t"]\nsubject = "s"\nbatchsize = 10\n', "batchsize"),
        ('name = "x"\ntopics = ["t"]\nsubject = "s"\ndlq_topic = "t"\n', "also a source"),
        ('name = "x y"\ntopics = ["t"]\nsubject = "s"\n', "name"),
        ("name = \n", "not valid TOML"),
        ('name = "x"\ntopics = ["t"]\nsubject = "s"\nretention = "a week"\n', "not a duration"),
    ],
)
def test_mistakes_are_reported_with_the_key(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=complaint) as error:
        load_definition(path)
    assert str(path) in str(error.value)


def test_a_missing_definition_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"consumers/payments\.toml for an example"):
        load_definition(tmp_path / "nothing")
