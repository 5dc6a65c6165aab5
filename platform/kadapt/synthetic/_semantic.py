"""The ``semantic`` dataset: a hierarchy of animal categories whose members inherit properties."""

from __future__ import annotations

from collections.abc import Callable

from kadapt.errors import InvalidInput
from kadapt.synthetic._common import Dataset, _Ask, _check_size, _finish, _Mirror
from kadapt.synthetic._templates import _CATEGORY_VERBS, _PROPERTY_CHATS, _PROPERTY_FRAMES, _ROOT_VERBS
from kadapt.synthetic._words import fresh_words


def semantic_dataset(size: int = 4, seed: int = 0, subcategories: int = 3, members: int = 3) -> Dataset:
    """A hierarchy of ``size`` root categories (even: roots mirror each other in pairs), each with
    ``subcategories`` subcategories of ``members`` members; every name is a nonsense word.

    Documents, one per node: a root "A glon is a kind of animal. Every glon eats plim. Every glon fears
    drass."; a subcategory "A snoub is a kind of glon. Every snoub lives near krof."; a member "A tove is a
    kind of snoub.". Members inherit the properties of their subcategory and root, which no document states.

    The last subcategory of every root is held out: its document states only its parent ("A vesh is a kind
    of glon.") and none of its own properties. ``holdout`` probes ask the properties of it and its members
    ("Every vesh eats" -> "plim"), which follow only through the hierarchy from the root.

    Probes (two choices, mirrored between the two roots of a pair, so the distractor is the same role's
    answer in the other tree): ``rephrase`` ("The tove is one type of" -> "snoub", "The glon is afraid of" ->
    "drass"), ``reversal`` ("One kind of snoub is the" -> "tove", "The animal that eats plim is the" ->
    "glon"), ``syllogism`` (one step of inheritance: "Every tove lives near" -> "krof", "Every snoub eats" ->
    "plim"), ``multi-hop`` (two steps: "Every tove eats" -> "plim") and ``holdout``.
    """
    _check_size("semantic", size, 2, even=True)
    if subcategories < 2 or members < 1:
        raise InvalidInput(f"need at least 2 subcategories and 1 member, got {subcategories} and {members}")
    per_root = 1 + len(_ROOT_VERBS) + subcategories * (1 + len(_CATEGORY_VERBS) + members)
    words = iter(fresh_words(size * per_root, seed, "semantic"))
    documents = []

    def add(path: list[int], name: str, parent: str, properties: dict[str, str], held_out: bool = False) -> None:
        sentences = [f"A {name} is a kind of {parent}."]
        sentences += [f"Every {name} {verb} {value}." for verb, value in properties.items()]
        metadata = {"dataset": "semantic", "path": path, "name": name, "parent": parent}
        metadata |= {"properties": properties, "held_out": held_out}
        doc_id = "semantic-" + "-".join(f"{level}{i}" for level, i in zip("rsm", path, strict=False))
        documents.append({"id": doc_id, "text": " ".join(sentences), "metadata": {"synthetic": metadata}})

    for root in range(size):
        root_name = next(words)
        add([root], root_name, "animal", {verb: next(words) for verb in _ROOT_VERBS})
        for sub in range(subcategories):
            held_out = sub == subcategories - 1
            sub_name = next(words)
            own = {} if held_out else {verb: next(words) for verb in _CATEGORY_VERBS}
            add([root, sub], sub_name, root_name, own, held_out)
            for member in range(members):
                add([root, sub, member], next(words), sub_name, {})
    description = (
        f"{size} root categories x {subcategories} subcategories x {members} members of nonsense-word animals "
        "with inherited properties; probes: rephrase, reversal, syllogism, multi-hop, holdout; 2 choices."
    )
    return _finish("semantic", description, documents, _semantic_probes)


def _semantic_probes(records: list[tuple[str, dict]]) -> list[dict]:
    nodes: dict[tuple[int, ...], dict] = {}
    for doc_id, meta in records:
        nodes[tuple(int(i) for i in meta["path"])] = {**meta, "id": doc_id}
    children: dict[str, list[str]] = {}
    for path in sorted(nodes):
        children.setdefault(nodes[path]["parent"], []).append(nodes[path]["name"])

    def descendants(name: str) -> list[str]:
        return [found for child in children.get(name, []) for found in (child, *descendants(child))]

    mirror = _Mirror()
    for path in sorted(nodes):
        twin_path = (path[0] + 1, *path[1:])
        chain_a = [nodes.get(path[:depth]) for depth in range(1, len(path) + 1)]
        chain_b = [nodes.get(twin_path[:depth]) for depth in range(1, len(path) + 1)]
        if path[0] % 2 or None in chain_a or None in chain_b:
            continue  # probes are emitted once per mirrored pair, and need every node on both paths
        _semantic_pair(mirror, chain_a, chain_b, descendants)
    return mirror.probes


_Chain = list[dict]


def _emit(
    mirror: _Mirror,
    chains: tuple[_Chain, _Chain],
    kind: str,
    question: str,
    answer: Callable[[_Chain], str],
    ids: Callable[[_Chain], list],
    chat: str,
    accepted: Callable[[_Chain], list[str]] | None = None,
) -> None:
    """One mirrored probe pair: ``question`` and ``chat`` formatted with each chain's fields."""

    def ask(c: _Chain) -> _Ask:
        answers = accepted(c) if accepted else [answer(c)]
        return (
            question.format(**_fields(c)),
            answer(c),
            [n["id"] for n in ids(c)],
            (chat.format(**_fields(c)), answers),
        )

    mirror.pair(kind, ask(chains[0]), ask(chains[1]))


def _semantic_pair(
    mirror: _Mirror, chain_a: list[dict], chain_b: list[dict], descendants: Callable[[str], list[str]]
) -> None:
    """Mirrored probes about the last node of two isomorphic root-to-node chains. A chat answer is right
    when the hierarchy makes it true: "Name one kind of glon." accepts every category and member under glon."""
    chains = (chain_a, chain_b)
    if len(chain_a) > 1:  # the stated parent, asked in other words and from the parent's side
        _emit(
            mirror,
            chains,
            "rephrase",
            "The {name} is one type of",
            lambda c: c[-2]["name"],
            lambda c: c[-1:],
            "What is the {name} a kind of?",
            lambda c: [node["name"] for node in reversed(c[:-1])],  # its parent first, then every ancestor
        )
        _emit(
            mirror,
            chains,
            "reversal",
            "One kind of {parent} is the",
            lambda c: c[-1]["name"],
            lambda c: c[-1:],
            "Name one kind of {parent}.",
            lambda c: [c[-1]["name"], *(name for name in descendants(c[-2]["name"]) if name != c[-1]["name"])],
        )
    _stated_properties(mirror, chains, descendants)
    _inherited_properties(mirror, chains)


def _stated_properties(mirror: _Mirror, chains: tuple[_Chain, _Chain], descendants) -> None:
    """The properties stated of the chains' last nodes, asked in other words and from the object's side (every
    category and member under the node has the property too)."""
    a, b = chains[0][-1], chains[1][-1]
    for verb in sorted(set(a["properties"]) & set(b["properties"])):
        rephrase, reverse = _PROPERTY_FRAMES[verb]
        ask_entity, ask_object = _PROPERTY_CHATS[verb]
        _emit(
            mirror,
            chains,
            "rephrase",
            rephrase.replace("{entity}", "{name}"),
            lambda c, v=verb: c[-1]["properties"][v],
            lambda c: c[-1:],
            ask_entity,
        )
        a_object, b_object = a["properties"][verb], b["properties"][verb]
        mirror.pair(
            "reversal",
            (
                reverse.format(object=a_object),
                a["name"],
                [a["id"]],
                (ask_object.format(object=a_object), [a["name"], *descendants(a["name"])]),
            ),
            (
                reverse.format(object=b_object),
                b["name"],
                [b["id"]],
                (ask_object.format(object=b_object), [b["name"], *descendants(b["name"])]),
            ),
        )


def _inherited_properties(mirror: _Mirror, chains: tuple[_Chain, _Chain]) -> None:
    """Properties the last nodes inherit from their ancestors, never stated for them: syllogism (one step),
    multi-hop (more), holdout (a chain through a held-out node)."""
    chain_a, chain_b = chains
    held_out = any(node["held_out"] for node in chain_a)
    for depth, ancestor in enumerate(chain_a[:-1]):
        steps = len(chain_a) - 1 - depth
        kind = "holdout" if held_out else ("syllogism" if steps == 1 else "multi-hop")
        for verb in sorted(set(ancestor["properties"]) & set(chain_b[depth]["properties"])):
            _emit(
                mirror,
                chains,
                kind,
                f"Every {{name}} {verb}",
                lambda c, v=verb, d=depth: c[d]["properties"][v],
                lambda c, d=depth: c[d:],
                _PROPERTY_CHATS[verb][0],
            )


def _fields(chain: list[dict]) -> dict[str, str]:
    return {"name": chain[-1]["name"], "parent": chain[-1]["parent"]}
