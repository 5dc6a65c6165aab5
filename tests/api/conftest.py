"""A live ``kadapt serve`` over the sample handbook KB, shared by the API end-to-end tests."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from tests.conftest import MODELS_DIR, REPO, Server, _clear_caches, build_handbook


@dataclass
class Live:
    server: Server
    keys: dict[str, str]
    env: dict[str, str]


@pytest.fixture(scope="package")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("KADAPT_"):
                patch.delenv(name)
        patch.setenv("KADAPT_DATA_DIR", str(root / "data"))
        patch.setenv("KADAPT_ALLOWED_ROOTS", str(REPO / "samples"))
        patch.setenv("KADAPT_MODELS_DIR", str(MODELS_DIR))
        _clear_caches()
        from kadapt.auth import create_key
        from kadapt.catalog import open_catalog
        from kadapt.settings import get_settings

        settings = get_settings()
        catalog = open_catalog(settings)
        build_handbook(catalog, settings, reader_groups=["staff"], owner_groups=["hr"])
        keys = {
            "admin": create_key(catalog, settings, role="admin", groups=[])[0],
            "reader": create_key(catalog, settings, role="reader", groups=["staff"])[0],
            "outsider": create_key(catalog, settings, role="reader", groups=["sales"])[0],
        }
        env = dict(os.environ)
        server = Server(env)
        try:
            yield Live(server, keys, env)
        finally:
            server.stop()
            _clear_caches()
