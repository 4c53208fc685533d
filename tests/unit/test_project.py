"""The project file (``featurestore.toml``): found from the working directory up or by
``$FEATURESTORE_PROJECT``, its settings under the environment's, paths relative to it,
typos refused by name, and the default definitions folder taken from it (no services
here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestore.errors import ConfigError
from featurestore.project import PROJECT_ENV, FeatureStore, Project, definitions_path
from featurestore.settings import Settings
from featurestore.stream.definition import resolve_path

CONSUMER = """
name = "payments"
topics = ["payments"]
subject = "payments-value"

[sinks.online]
prefix = "p"

[[entities]]
name = "card"
join_keys = ["card_id"]

[[views]]
name = "card_spend"
source = "payments-value"
entity = "card"
owner = "o@example.com"

[[views.aggregations]]
column = "amount"
functions = ["sum"]
windows = ["1h"]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("REDIS_URL", "OFFLINE_PATH", "REGISTRY_URL", "LOG_LEVEL"):
        monkeypatch.delenv(f"FEATURESTORE_{name}", raising=False)
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "payments.toml").write_text(CONSUMER)
    (tmp_path / "featurestore.toml").write_text(
        'name = "shop"\ndefinitions = "defs"\n\n[settings]\noffline_path = "offline"\n'
        'redis_url = "redis://file:6379/0"\nlog_level = "debug"\n'
    )
    (tmp_path / "deep" / "er").mkdir(parents=True)
    return tmp_path


def test_found_from_below_with_paths_made_its_own(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project / "deep" / "er")
    found = Project.find()
    assert found is not None
    assert (found.name, found.root, found.definitions) == ("shop", project, project / "defs")
    settings = Settings()
    assert settings.offline_path == str(project / "offline")
    assert settings.redis_url == "redis://file:6379/0"
    assert settings.log_level == "DEBUG"


def test_the_environment_wins_over_the_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("FEATURESTORE_REDIS_URL", "redis://env:6379/0")
    assert Settings().redis_url == "redis://env:6379/0"
    assert Settings(redis_url="redis://arg:1/0").redis_url == "redis://arg:1/0"


def test_outside_a_project_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    monkeypatch.delenv("FEATURESTORE_REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Project.find() is None
    assert Settings().redis_url is None
    assert definitions_path("consumers") == Path("consumers")


def test_named_by_the_environment_from_anywhere(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    monkeypatch.setenv(PROJECT_ENV, str(project / "featurestore.toml"))
    assert Settings().offline_path == str(project / "offline")
    # `featurestore run payments` and the default definitions folder find the project's.
    assert resolve_path("payments") == project / "defs" / "payments.toml"
    assert definitions_path("consumers") == project / "defs"


def test_a_feature_store_reads_its_own_project_whatever_the_directory(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    store = FeatureStore(repo_path=project)
    assert store.settings.offline_path == str(project / "offline")
    assert list(store.catalog.views) == ["card_spend"]
    assert store.catalog.join_keys == {"card": ["card_id"]}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('name = "x"\nredis_url = "redis://a"\n', "unknown key(s) ['redis_url']"),
        ('[settings]\nredis_uri = "redis://a"\n', "unknown setting(s) ['redis_uri']"),
        ("settings = 3\n", "must be a table"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_mistakes_in_the_file_are_named(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "featurestore.toml").write_text(text)
    with pytest.raises(ConfigError) as error:
        Project.load(tmp_path)
    assert words in str(error.value)


def test_no_project_file_says_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no featurestore.toml at .*write one"):
        FeatureStore(repo_path=tmp_path)
