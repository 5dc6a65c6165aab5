"""The pilot's sample of a KB: documents stratified by source, with the probes about them."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy import select

from kadapt.catalog import Catalog, Document, SnapshotDocument
from kadapt.errors import InvalidInput


@dataclass
class SampleDoc:
    id: str
    source_id: int
    text: str
    title: str = ""
    locator: str = ""


def snapshot_docs(catalog: Catalog, snapshot_id: int) -> list[SampleDoc]:
    with catalog.session() as session:
        members = select(SnapshotDocument.document_id).where(SnapshotDocument.snapshot_id == snapshot_id)
        rows = session.execute(
            select(Document.id, Document.source_id, Document.text, Document.title, Document.locator)
            .where(Document.id.in_(members))
            .order_by(Document.id)
        )
        return [SampleDoc(*row) for row in rows]


def pilot_sample(documents: list[SampleDoc], probes, size: int, seed: int = 0) -> tuple[list[str], bool]:
    """Document ids of a stratified sample of about ``size`` documents, and whether it is the whole KB.

    Documents that probes test together (a fact told in several articles, a syllogism's premises) form
    one unit, so a sampled probe always has all its documents; units are drawn from each source in
    proportion to its size, those with probes first (in a large KB only some documents have probes, see
    KADAPT_PROBE_DOCUMENTS). Probes without documents (imported without ``source_ids``) cannot be matched
    to a sample, so they make the pilot use the whole KB."""
    if len(documents) <= size or any(not probe.source_ids for probe in probes):
        return [doc.id for doc in documents], True
    parent = {doc.id: doc.id for doc in documents}

    def find(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for probe in probes:
        ids = [doc_id for doc_id in probe.source_ids if doc_id in parent]
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])
    probed = {doc_id for probe in probes for doc_id in probe.source_ids}
    units: dict[str, list[SampleDoc]] = {}
    for doc in documents:
        units.setdefault(find(doc.id), []).append(doc)
    by_source: dict[int, list[list[SampleDoc]]] = {}
    for unit in units.values():
        by_source.setdefault(unit[0].source_id, []).append(unit)
    # each source's share of the sample by largest remainder, at least one unit each, then units drawn at
    # random within the source
    rng = random.Random(seed)
    sizes = {source: sum(len(unit) for unit in group) for source, group in by_source.items()}
    exact = {source: size * sizes[source] / len(documents) for source in by_source}
    quota = {source: max(1, int(exact[source])) for source in by_source}
    for source in sorted(by_source, key=lambda key: exact[key] - int(exact[key]), reverse=True):
        if sum(quota.values()) >= size:
            break
        quota[source] += 1
    chosen: list[str] = []
    for source_id in sorted(by_source):
        group = sorted(by_source[source_id], key=lambda unit: unit[0].id)
        rng.shuffle(group)
        group.sort(key=lambda unit: not any(doc.id in probed for doc in unit))  # stable: still shuffled within
        taken = 0
        for unit in group:
            if taken >= quota[source_id]:
                break
            chosen.extend(doc.id for doc in unit)
            taken += len(unit)
    return sorted(chosen), False


def _sample(documents, probes, size: int, warnings: list[str]) -> tuple[list[str], bool, list]:
    """(the sample's document ids, whether it is the whole KB, the probes whose documents it holds)."""
    sample_ids, whole = pilot_sample(documents, probes, size)
    sample = set(sample_ids)
    pilot_probes = probes if whole else [probe for probe in probes if set(probe.source_ids) <= sample]
    if not pilot_probes:
        raise InvalidInput(f"the pilot sample of {len(sample)} documents has no probes; raise KADAPT_PILOT_DOCUMENTS")
    if whole and len(documents) > size:
        warnings.append(
            f"Some probes name no documents, so the pilot ran on the whole KB ({len(documents)} documents) "
            f"instead of a sample of {size}."
        )
    return sample_ids, whole, pilot_probes
