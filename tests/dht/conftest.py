"""DHT test fixtures: the embedded kubo of ``tests/storage/conftest.py`` (see ``tests/kubo.py``), re-exported."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_storage_fixtures", Path(__file__).parent.parent / "storage" / "conftest.py")
_storage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_storage)

kubo = _storage.kubo
