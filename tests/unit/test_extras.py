"""Optional parts name the extra that installs them when its packages are missing."""

from __future__ import annotations

import pytest

from featurestore.errors import MissingExtraError, import_extra


def test_an_installed_module_is_returned() -> None:
    assert import_extra("json", "report", "a test").dumps([1]) == "[1]"


def test_a_missing_module_names_its_extra() -> None:
    with pytest.raises(MissingExtraError) as caught:
        import_extra("featurestore_no_such_module", "report", "the drift report's charts")
    message = str(caught.value)
    assert "the drift report's charts needs featurestore_no_such_module" in message
    assert "pip install 'featurestore[report]'" in message
