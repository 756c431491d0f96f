import os
from pathlib import Path

import pytest

from eolab.data.paths import data_root


@pytest.fixture(scope="session")
def root() -> Path:
    """The real shared data (tests of readers run on real files, never copies)."""
    return data_root(os.environ.get("EOLAB_DATA"))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Caches built by tests go to a temporary folder, not the user's cache."""
    old = os.environ.get("EOLAB_CACHE")
    os.environ["EOLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("EOLAB_CACHE", None)
    else:
        os.environ["EOLAB_CACHE"] = old
