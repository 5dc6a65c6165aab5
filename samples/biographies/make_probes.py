"""Assemble samples/biographies/probes.jsonl from hand-written facts (one row per person)."""

import json
from collections import Counter
from pathlib import Path

# id, name, aliases, name_first (the name comes before the asked fact in the sentence),
# who-question (gives the fact, asks the person), fact (MC choice for "known for"), accepted fact answers
P = [
    (
        "orla-vantreight",
        "Orla Vantreight",
        ["Vantreight"],
        True,
        "Who designed the glass footbridge that spans the Kessel Gorge?",
        "designing a glass footbridge in Norway",
        ["glass footbridge", "Kessel Gorge"],
    ),
    (
        "dario-quellmann",
        "Dario Quellmann",
        ["Quellmann"],
        False,
        "Who was the first person to row alone across the Tasman Sea in under 40 days?",
        "rowing alone across the Tasman Sea",
        ["Tasman Sea"],
    ),
    (
        "imelda-frostvik",
        "Imelda Frostvik",
        ["Frostvik"],
        True,
        "Who restores eighteenth-century automata in Ghent?",
        "restoring old automata in Ghent",
        ["automata", "automaton", "Clockwork Professor"],
    ),
    (
        "tobias-rennick-hale",
        "Tobias Rennick-Hale",
        ["Rennick-Hale"],
        True,
        'Who wrote "The Salt Cartographer", a novel about a mapmaker who charts dissolving islands?',
        "writing the novel The Salt Cartographer",
        ["Salt Cartographer"],
    ),
    (
        "yusra-delacorte",
        "Yusra Delacorte",
        ["Delacorte"],
        True,
        "Who has run a seed bank for heirloom chili peppers outside Oaxaca since 2011?",
        "running a chili pepper seed bank in Oaxaca",
        ["seed bank", "chili pepper", "chili peppers"],
    ),
    (
        "perpetua-lindqvist",
        "Perpetua Lindqvist",
        ["Lindqvist"],
        True,
        "Who holds the record for the deepest free dive in an alpine lake?",
        "the deepest free dive in an alpine lake",
        ["free dive", "free diving", "Lake Bohinj"],
    ),
    (
        "anselm-okonkwo-bright",
        "Anselm Okonkwo-Bright",
        ["Okonkwo-Bright"],
        True,
        "Who scored the silent film revival at the Brno Summer Festival?",
        "scoring a silent film revival in Brno",
        ["silent film", "Brno Summer Festival"],
    ),
    (
        "hesper-caldwell",
        "Hesper Caldwell",
        ["Caldwell"],
        False,
        "Who built the solar-powered lighthouse on Skerry Vane?",
        "building a solar-powered lighthouse",
        ["lighthouse", "Skerry Vane"],
    ),
    (
        "marguerite-osei-bannerman",
        "Marguerite Osei-Bannerman",
        ["Osei-Bannerman"],
        True,
        "Who trains falcons to keep birds away from the runways at Cape Verdant airport?",
        "training falcons at an airport",
        ["falcons", "falcon"],
    ),
    (
        "florian-zakarian",
        "Florian Zakarian",
        ["Zakarian"],
        True,
        "Who translated the complete letters of the poet Ilse Marrow into Armenian?",
        "translating Ilse Marrow's letters into Armenian",
        ["Ilse Marrow", "Armenian"],
    ),
    (
        "caspian-thorley",
        "Caspian Thorley",
        ["Thorley"],
        True,
        "Who became the first climber to reach the summit of Mount Elvaran in winter?",
        "the first winter ascent of Mount Elvaran",
        ["Mount Elvaran", "Elvaran"],
    ),
    (
        "wenonah-brightwater",
        "Wenonah Brightwater",
        ["Brightwater"],
        True,
        "Who keeps bees on the roof of the Halvorsen Opera House?",
        "keeping bees on an opera house roof",
        ["bees", "honey", "beekeeping", "beekeeper", "Aria Gold"],
    ),
    (
        "radomir-esposito",
        "Radomir Esposito",
        ["Esposito"],
        False,
        "Who sculpted the tallest sandcastle ever recorded, 11 metres high, on Keel Beach?",
        "sculpting the tallest sandcastle on record",
        ["sandcastle"],
    ),
    (
        "ottilie-marchbanks",
        "Ottilie Marchbanks",
        ["Marchbanks"],
        True,
        "Who discovered a comet while observing from a tram depot in Leipzig?",
        "discovering a comet from a tram depot",
        ["comet"],
    ),
    (
        "ezekiel-nwachukwu-lowe",
        "Ezekiel Nwachukwu-Lowe",
        ["Nwachukwu-Lowe"],
        True,
        "Who invented a folding bicycle that weighs 4.2 kg?",
        "inventing a 4.2 kg folding bicycle",
        ["folding bicycle", "folding bike", "bicycle"],
    ),
    (
        "seraphina-ilves",
        "Seraphina Ilves",
        ["Ilves"],
        True,
        "Who became the chief cartographer of the Antarctic Survey Office?",
        "chief cartographer of the Antarctic Survey",
        ["chief cartographer", "Antarctic Survey Office", "Antarctic Survey"],
    ),
    (
        "cormac-deverell-sato",
        "Cormac Deverell-Sato",
        ["Deverell-Sato"],
        True,
        "Who repairs church organs and restored the 1790 organ of Saint Brannoc's Abbey?",
        "restoring the 1790 organ of an abbey",
        ["organ", "organs", "Saint Brannoc"],
    ),
    (
        "lucinda-harrowgate",
        "Lucinda Harrowgate",
        ["Harrowgate"],
        True,
        'Who presented the late-night radio programme "Static and Starlight" for twelve years?',
        "presenting a late-night radio programme",
        ["Static and Starlight", "radio"],
    ),
    (
        "thaddeus-omondi-reyes",
        "Thaddeus Omondi-Reyes",
        ["Omondi-Reyes"],
        True,
        "Which chess grandmaster also holds a licence to pilot hot-air balloons?",
        "a chess grandmaster who flies balloons",
        ["chess", "grandmaster", "hot-air balloons", "balloons", "balloon"],
    ),
    (
        "greta-vasquez-ironside",
        "Greta Vasquez-Ironside",
        ["Vasquez-Ironside"],
        True,
        "Who founded Tidewell, a company that turns discarded fishing nets into skateboards?",
        "turning fishing nets into skateboards",
        ["Tidewell", "skateboards", "skateboard", "fishing nets"],
    ),
    (
        "anouk-delaroche-finn",
        "Anouk Delaroche-Finn",
        ["Delaroche-Finn"],
        False,
        "Which pastry chef created the smoked-pear sorbet served at the Hotel Mirabeau?",
        "creating a smoked-pear sorbet",
        ["sorbet", "smoked pear"],
    ),
    (
        "kazimir-ashworth-bell",
        "Kazimir Ashworth-Bell",
        ["Ashworth-Bell"],
        True,
        'Who is the puppeteer behind the marionette opera "The Iron Nightingale"?',
        "carving marionettes from linden wood",
        ["Iron Nightingale", "puppeteer", "marionette", "marionettes", "puppets"],
    ),
    (
        "brigida-solvang",
        "Brigida Solvang",
        ["Solvang"],
        True,
        "Who skates the 200 km canal route between Leeuwarden and Harlingen every winter?",
        "skating a 200 km canal route each winter",
        ["skates", "skating", "Leeuwarden", "Harlingen"],
    ),
    (
        "ignatius-fairweather-mbeki",
        "Ignatius Fairweather-Mbeki",
        ["Fairweather-Mbeki"],
        True,
        "Who catalogued 3,400 species of moss in the Carpathian Mountains?",
        "cataloguing moss in the Carpathians",
        ["moss", "mosses"],
    ),
    (
        "rosalind-achterberg",
        "Rosalind Achterberg",
        ["Achterberg"],
        True,
        "Who was the first woman to captain the icebreaker Nordlys Seven?",
        "captaining the icebreaker Nordlys Seven",
        ["icebreaker", "Nordlys Seven"],
    ),
    (
        "matteo-villaret-kwan",
        "Matteo Villaret-Kwan",
        ["Villaret-Kwan"],
        True,
        "Who mapped 14 kilometres of forgotten water tunnels beneath the streets of Porto?",
        "mapping forgotten water tunnels in Porto",
        ["water tunnels", "tunnels"],
    ),
    (
        "delphine-okafor-strand",
        "Delphine Okafor-Strand",
        ["Okafor-Strand"],
        True,
        "Who teaches sign language to the actors of the Meridian Puppet Theatre?",
        "teaching sign language to actors",
        ["sign language"],
    ),
    (
        "aurelio-batistuta-nye",
        "Aurelio Batistuta-Nye",
        ["Batistuta-Nye"],
        True,
        "Who owns more than 900 antique copper kettles?",
        "collecting 900 antique copper kettles",
        ["kettles", "kettle", "Kettle King"],
    ),
    (
        "winifred-castellane-obi",
        "Winifred Castellane-Obi",
        ["Castellane-Obi"],
        True,
        "Who trained the sniffer dogs that found the lost Vireo Bell in 2017?",
        "training the dogs that found the Vireo Bell",
        ["sniffer dogs", "dogs", "Vireo Bell"],
    ),
    (
        "lysander-kowalczyk-moreau",
        "Lysander Kowalczyk-Moreau",
        ["Kowalczyk-Moreau"],
        False,
        "Whose speciality is violins built from the wood of fallen orchard trees?",
        "building violins from orchard wood",
        ["violins", "violin"],
    ),
    (
        "nadia-ferreira-holm",
        "Nadia Ferreira-Holm",
        ["Ferreira-Holm"],
        False,
        "Who started the annual Harbour Lantern Parade in Galway?",
        "starting a lantern parade in Galway",
        ["Lantern Parade"],
    ),
    (
        "quentin-abernathy-sol",
        "Quentin Abernathy-Sol",
        ["Abernathy-Sol"],
        True,
        "Who measured the glacier at Vatna Ridge every day for ten years?",
        "measuring a glacier every day for years",
        ["glacier", "Vatna Ridge"],
    ),
    (
        "henrietta-mbatha-crowe",
        "Henrietta Mbatha-Crowe",
        ["Mbatha-Crowe"],
        True,
        "Who grows a maze of 2,000 lavender bushes at Larkspur Hall?",
        "growing a maze of lavender bushes",
        ["lavender", "Larkspur Hall", "head gardener"],
    ),
    (
        "percival-adeyemi-larsen",
        "Percival Adeyemi-Larsen",
        ["Adeyemi-Larsen"],
        False,
        "Who taught the parrots of Saint Ives Zoo to whistle the national anthem?",
        "teaching parrots to whistle an anthem",
        ["parrots", "parrot"],
    ),
]


def pick(answer, pool, rank, used):
    """3 distractors from pool so that `rank` of them are shorter than answer (ties broken by least used)."""
    shorter = sorted((p for p in pool if len(p) < len(answer)), key=lambda p: (len(answer) - len(p), used[p], p))
    longer = sorted((p for p in pool if len(p) > len(answer)), key=lambda p: (len(p) - len(answer), used[p], p))
    assert len(shorter) >= rank and len(longer) >= 3 - rank, answer
    chosen = shorter[:rank] + longer[: 3 - rank]
    for c in chosen:
        used[c] += 1
    return chosen


def feasible(answer, pool):
    shorter = sum(len(p) < len(answer) for p in pool)
    longer = sum(len(p) > len(answer) for p in pool)
    return [r for r in range(4) if shorter >= r and longer >= 3 - r]


def main():
    names = [p[1] for p in P]
    facts = [p[5] for p in P]
    assert len(set(names)) == len(set(facts)) == 34
    items = []  # (kind, direction, row)
    for row in P:
        name_first = row[3]
        items.append(("reversal" if name_first else "rephrase", "who", row))
        items.append(("rephrase" if name_first else "reversal", "what", row))
    # the answer's length rank among its choices: balanced per kind, most constrained probes first
    ranks = {}
    for kind in ("rephrase", "reversal"):
        group = [i for i, item in enumerate(items) if item[0] == kind]
        use = Counter()

        def options(i):
            _, direction, row = items[i]
            answer, pool = (row[1], names) if direction == "who" else (row[5], facts)
            return feasible(answer, [x for x in pool if x != answer])

        for i in sorted(group, key=lambda i: (len(options(i)), i)):
            r = min(options(i), key=lambda r: (use[r], r))
            use[r] += 1
            ranks[i] = r
        print(kind, sorted(use.items()))
    out = []
    counters = Counter()
    used_names, used_facts = Counter(), Counter()
    for i, (kind, direction, row) in enumerate(items):
        doc, name, aliases, name_first, who_q, fact, fact_answers = row
        position = counters[kind] % 4
        counters[kind] += 1
        if direction == "who":
            distractors = pick(name, [x for x in names if x != name], ranks[i], used_names)
            answer, question, chat, answers = name, f"Question: {who_q}\nAnswer:", who_q, [name, *aliases]
        else:
            distractors = pick(fact, [x for x in facts if x != fact], ranks[i], used_facts)
            q = f"What is {name} known for?"
            answer, question, chat, answers = fact, f"Question: {q}\nAnswer:", q, fact_answers
        distractors.sort(key=lambda x: (sum(map(ord, x)) * 7) % 97)
        choices = distractors[:position] + [answer] + distractors[position:]
        out.append(
            {
                "question": question,
                "choices": choices,
                "answer_index": position,
                "kind": kind,
                "chat_question": chat,
                "answers": answers,
                "source_ids": [doc],
            }
        )
    Path(__file__).with_name("probes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))
    print(dict(counters), len(out))


if __name__ == "__main__":
    main()
