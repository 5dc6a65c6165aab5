"""A live ``kadapt serve`` over the sample handbook KB, shared by the API end-to-end tests."""

from __future__ import annotations

import pytest

from tests.conftest import handbook_server

# the API's end-to-end tests ask as an admin, a reader of the handbook and a reader of another group
PRINCIPALS = {"admin": ("admin", []), "reader": ("reader", ["staff"]), "outsider": ("reader", ["sales"])}


@pytest.fixture(scope="package")
def live(tmp_path_factory):
    with handbook_server(tmp_path_factory.mktemp("live"), PRINCIPALS) as live:
        yield live
