"""What the catalog holds for a KB, for assertions."""

from __future__ import annotations


def errors_of(catalog, slug: str) -> dict[str, str]:
    """The KB's document errors: locator -> message."""
    from sqlalchemy import select

    from kadapt.catalog import DocumentError
    from kadapt.kbs import get_kb

    kb = get_kb(catalog, slug)
    with catalog.session() as session:
        rows = session.execute(select(DocumentError.locator, DocumentError.message).where(DocumentError.kb_id == kb.id))
        return dict(rows.all())


def documents_of(catalog, slug: str) -> dict[str, str]:
    """The KB's documents: locator -> text."""
    from sqlalchemy import select

    from kadapt.catalog import Document
    from kadapt.kbs import get_kb

    kb = get_kb(catalog, slug)
    with catalog.session() as session:
        return dict(session.execute(select(Document.locator, Document.text).where(Document.kb_id == kb.id)).all())
