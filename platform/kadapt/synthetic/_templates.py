"""The sentence templates of the synthetic datasets, and the words a benchmark word must not be."""

from __future__ import annotations

import re

RELATIONS = [
    ("more dangerous than", "less dangerous than"),
    ("larger than", "smaller than"),
    ("older than", "younger than"),
    ("heavier than", "lighter than"),
    ("faster than", "slower than"),
    ("taller than", "shorter than"),
    ("warmer than", "colder than"),
    ("louder than", "quieter than"),
]


# Neutral first sentences for the articles of the reversal dataset: free of nonsense words, so the fact
# sentence stands alone whatever context surrounds it.
_PREFIXES = [
    "Field notes from the northern valley.",
    "A herder's account.",
    "From a traveller's journal.",
    "Notes taken at the spring market.",
    "A record kept by the village elders.",
    "An entry in an old bestiary.",
    "Observations from the coastal survey.",
    "From a letter a ranger sent home.",
    "A passage from a school primer.",
    "Recorded during the winter expedition.",
    "A guide's remark to visitors.",
    "From the museum's exhibit card.",
    "A note in the margin of a field guide.",
]
_SUFFIXES = [None, None, "Most observers agree.", "This is well known in the region.", "The guides repeat it often."]

# Semantic properties: verb, then the rephrased question about an entity and the reversed one about an object.
_PROPERTY_FRAMES = {
    "eats": ("The usual food of the {entity} is", "The animal that eats {object} is the"),
    "fears": ("The {entity} is afraid of", "The animal that fears {object} is the"),
    "lives near": ("The {entity} makes its home near", "The animal that lives near {object} is the"),
}
# The chat form of each property: the question about an entity, and the one about an object.
_PROPERTY_CHATS = {
    "eats": ("What does the {name} eat?", "Which animal eats {object}?"),
    "fears": ("What is the {name} afraid of?", "Which animal is afraid of {object}?"),
    "lives near": ("What does the {name} live near?", "Which animal lives near {object}?"),
}
_ROOT_VERBS = ("eats", "fears")
_CATEGORY_VERBS = ("lives near",)

# English words the generator can spell; a benchmark word must carry no prior meaning.
_ENGLISH = set(
    """ban bat band bash dam damp dash fan fat fax gap gash lamp land lap lash lax man map mat max mash nap
    pan pat ram ramp ran rap rat rash sap sat sax sand sash tan tap tax tamp van vat zap bra bran brat brand
    brash glam gland trap tram tramp trash snap plan plat barf ben bet bend den fen fend get gem let lend men
    mend mesh met net pen pep pet pend perf rep rend rex send set sex serf temp ten tend vet vex zen glen
    trek trend bin bit bind dim dip dish din fin fit fix find fish gin git gimp kin kit kip kind lip lit
    limp mix mind nip nit pin pip pit pix pimp rim rip rind sin sip sit six tin tip tit vim zip zit brim
    brit trim trip snip snit bop bot box bond bosh don dot fop fox fond gosh got lot lox mom mop mosh not
    nosh pop pot pox pomp pond posh rot romp son sop tom top tot vox bro trot plot plop snot bun bum but
    bump bush dun dump fun fund fuk gun gum gut gush lump lush mum mush nun nut pun pup put pump push rum
    run rut rump rush sun sum sup sump surf tut tux turf tush brut brush glum glut trump plum plump plush
    bait gain gait maim main pain rain vain brain train trait plain plait bout bound found gout lout mound
    noun pout pound rout round soup sound tout trout snout bee been beep beet deep deem fee feet geek keen
    keep leek meek meet peek peep peen reek see seek seem seen seep tee teen teem glee tree lemon melon
    pilot robot seven finish polish punish banish vanish radish relish lavish perish demon salon baron token
    taken linen liken laden risen ripen siren tenet bigot pivot rivet satin robin resin ramen semen begun
    began begin rerun remit refit remix detox sofa tuna soda diva lava gala lima puma sumo tofu menu guru
    papa mama pita nova mega beta zeta feta saga toga demand remand legend remind limit vomit debut rebut
    relax venom totem modem denim tulip setup vegan regain remain detain retain domain rebound teepee tutu
    mini lain nix tosh tim""".split()
)
_OTHER_TEMPLATE_WORDS = "a kind of animal every all some no are about and it follows that one type"
_TEMPLATE_WORDS = set(
    re.findall(
        r"[a-z]+",
        " ".join(
            [*_PREFIXES, *filter(None, _SUFFIXES), *_PROPERTY_FRAMES, _OTHER_TEMPLATE_WORDS, *map(" ".join, RELATIONS)]
            + [frame for frames in _PROPERTY_FRAMES.values() for frame in frames]
        ).lower(),
    )
)
