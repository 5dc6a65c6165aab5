"""A live ``kadapt serve`` over the sample handbook KB, shared by the API end-to-end tests."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from tests.conftest import REPO, Server, build_handbook, kadapt_settings


@dataclass
class Live:
    server: Server
    keys: dict[str, str]
    env: dict[str, str]


@pytest.fixture(scope="package")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    with kadapt_settings(root, [REPO / "samples"]):
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
