"""KADAPT_PROBE_DOCUMENTS: a generator that writes probes with the model processes at most that many
documents of a snapshot, an even and stable spread; the pilot samples those documents first."""

from __future__ import annotations

from kadapt.kbs import add_source, create_kb
from kadapt.sync import sync_kb

TEAMS = ["Atlas", "Borealis", "Cygnus", "Draco", "Eridanus", "Fornax", "Gemini", "Hydra"]


def _kb(catalog, kadapt_env) -> None:
    from kadapt.settings import get_settings

    docs = kadapt_env / "teams"
    docs.mkdir()
    for index, team in enumerate(TEAMS):
        (docs / f"{team.lower()}.md").write_text(
            f"# {team}\n\nThe {team} team has its weekly review every Thursday at {index + 9} o'clock.\n"
            f"Its budget for the year is {(index + 2) * 1000} EUR.\n"
        )
    create_kb(catalog, "teams")
    add_source(catalog, get_settings(), "teams", "files", {"path": str(docs)})
    sync_kb(catalog, "teams")


def _probed(catalog, snapshot: int) -> set[str]:
    from kadapt.probes import snapshot_probes

    return {doc for probe in snapshot_probes(catalog, snapshot) for doc in probe.source_ids}


def test_model_written_probes_cover_at_most_the_set_number_of_documents(catalog, limits, kadapt_env):
    from kadapt.probes import generate_probes

    _kb(catalog, kadapt_env)
    limits(probe_documents=3)
    first = generate_probes(catalog, "teams", names=["questions"])
    assert first["by_generator"]["questions"]["documents"] == 3
    assert first["by_generator"]["questions"]["left_out"] == 5
    chosen = _probed(catalog, first["snapshot"])
    assert 1 <= len(chosen) <= 3

    again = generate_probes(catalog, "teams", names=["questions"])  # the cap is reached: nothing more
    assert again["by_generator"]["questions"] == {"documents": 0, "added": 0, "left_out": 5}

    limits(probe_documents=5)  # raised: two more documents, the first three keep their probes
    more = generate_probes(catalog, "teams", names=["questions"])
    assert (more["by_generator"]["questions"]["documents"], more["by_generator"]["questions"]["left_out"]) == (2, 3)
    assert chosen <= _probed(catalog, more["snapshot"])


def test_the_pilot_samples_documents_with_probes_first():
    from types import SimpleNamespace

    from kadapt.pilot import SampleDoc, pilot_sample

    documents = [SampleDoc(f"s{source}-d{index:02}", source, "text") for source in (1, 2) for index in range(20)]
    probed = {"s1-d03", "s1-d17", "s2-d05", "s2-d11"}
    probes = [SimpleNamespace(source_ids=[doc_id]) for doc_id in sorted(probed)]
    for seed in range(5):
        chosen, whole = pilot_sample(documents, probes, 6, seed=seed)
        assert not whole and len(chosen) == 6
        assert probed <= set(chosen)  # every probed document is in, the rest of the sample drawn at random
