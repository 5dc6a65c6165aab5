"""FastAPI dependencies and their ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from kadapt.auth import Principal, authenticate_client, client_address
from kadapt.catalog import Catalog
from kadapt.errors import PermissionDenied
from kadapt.models import ModelPool
from kadapt.settings import Settings
from kadapt.store import VectorStore

__all__ = [
    "CatalogDep",
    "PoolDep",
    "PrincipalDep",
    "SettingsDep",
    "StoreDep",
    "AdminDep",
]


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


def _store(request: Request) -> VectorStore:
    return request.app.state.store()


def _pool(request: Request) -> ModelPool:
    return request.app.state.pool


SettingsDep = Annotated[Settings, Depends(_settings)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]
StoreDep = Annotated[VectorStore, Depends(_store)]
PoolDep = Annotated[ModelPool, Depends(_pool)]


async def _principal(
    request: Request,
    catalog: CatalogDep,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
    x_api_key: Annotated[str | None, Header(description="The API key (alternative to Authorization)")] = None,
) -> Principal:
    key = x_api_key
    if authorization:
        scheme, _, value = authorization.partition(" ")
        key = value.strip() if scheme.lower() == "bearer" else authorization.strip()
    principal = await run_in_threadpool(
        authenticate_client,
        catalog,
        settings,
        request.app.state.auth_throttle,
        key,
        client=client_address(request),
        via="api",
    )
    request.state.principal = principal  # the audit log's actor
    return principal


PrincipalDep = Annotated[Principal, Depends(_principal)]


async def _admin(principal: PrincipalDep) -> Principal:
    if not principal.can_administer:
        raise PermissionDenied("this route needs an admin or editor key")
    return principal


AdminDep = Annotated[Principal, Depends(_admin)]
