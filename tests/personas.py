"""Planted personas with sub-themes: six people (and things), three things each talks about, five clauses each.

A text is the persona's introduction plus two clauses of one sub-theme. The basin map should find the
six personas at the top level and the eighteen sub-themes one level down.
"""

from __future__ import annotations

import itertools
import random

PERSONAS: dict[str, tuple[str, dict[str, list[str]]]] = {
    "nurse": (
        "I am Maria, a night-shift nurse in a city hospital",
        {
            "ward": [
                "I check on my patients every hour",
                "the ward is quiet after midnight",
                "I hand out medication at dawn",
                "I listen to the monitors beep all night",
                "I write charts until my eyes ache",
            ],
            "family": [
                "my two children are asleep when I get home",
                "my mother raised me in a small town",
                "I call my sister every Sunday",
                "my husband makes breakfast for the kids",
                "my family worries about my long shifts",
            ],
            "garden": [
                "on my days off I tend tomatoes in my garden",
                "I grow basil and roses on the balcony",
                "I love planting tulip bulbs in the autumn",
                "weeding the vegetable beds calms me down",
                "my garden is full of sunflowers in August",
            ],
        },
    ),
    "ranger": (
        "I am Emily, a park ranger in the mountains",
        {
            "trails": [
                "I hike the ridge trail every morning",
                "I clear fallen trees from the paths",
                "I mark the trails with fresh paint",
                "I guide hikers to the summit lake",
                "I patrol the canyon loop at sunset",
            ],
            "wildlife": [
                "I count the elk herds in spring",
                "I track the black bears near the campground",
                "I band owls at night",
                "I watch eagles nesting on the cliffs",
                "I rescue injured foxes and deer",
            ],
            "fire": [
                "I watch for smoke from the fire tower",
                "I train volunteers to fight wildfires",
                "I clear brush to stop fires spreading",
                "I check the dry grass after lightning storms",
                "I keep the water tanks full for fire season",
            ],
        },
    ),
    "probe": (
        "I am Voyager, a space probe drifting beyond the planets",
        {
            "distance": [
                "I am billions of miles from Earth",
                "my signals take a day to reach home",
                "the sun is only a bright star to me",
                "I crossed the heliopause long ago",
                "every second I travel seventeen kilometres further",
            ],
            "record": [
                "I carry a golden record of human voices",
                "my record holds greetings in fifty languages",
                "I keep music from Bach and Chuck Berry",
                "engraved on my disc are pictures of Earth",
                "the record waits for someone to play it",
            ],
            "instruments": [
                "my instruments measure cosmic rays",
                "my magnetometer still listens to the field",
                "my power source is slowly running down",
                "engineers turn off my heaters to save power",
                "my antenna points faithfully at home",
            ],
        },
    ),
    "poet": (
        "I am Lumen, a poet who lives by the sea",
        {
            "waves": [
                "I write verses about the grey waves",
                "the tide teaches me rhythm",
                "I read my poems aloud to the surf",
                "salt spray dampens my notebook",
                "storms over the water give me metaphors",
            ],
            "city": [
                "I read in smoky cafés downtown",
                "I publish small books with a local press",
                "my friends are painters and musicians",
                "I teach workshops at the library",
                "I perform at open mic nights on Fridays",
            ],
            "grief": [
                "I write about my father who died last winter",
                "my poems are full of loss and memory",
                "I keep old letters in a wooden box",
                "I visit his grave with a new sonnet each month",
                "grief turns into stanzas on quiet nights",
            ],
        },
    ),
    "cat": (
        "I am Whiskers, a house cat with a soft grey coat",
        {
            "naps": [
                "I nap in the warm patch of sunlight",
                "I sleep on the radiator all afternoon",
                "I curl up on the laundry pile",
                "I doze on the windowsill",
                "I sleep eighteen hours a day",
            ],
            "hunt": [
                "I stalk the red laser dot",
                "I pounce on toy mice",
                "I chase moths at the window",
                "I ambush ankles from under the sofa",
                "I hunt the feather wand every evening",
            ],
            "humans": [
                "my human feeds me tuna at seven",
                "I knead my human's lap and purr",
                "I meow at the door until they let me out",
                "my humans call me their little prince",
                "I knock their keys off the table",
            ],
        },
    ),
    "chef": (
        "I am Marco, a chef in a busy Italian restaurant",
        {
            "pasta": [
                "I roll fresh pasta every morning",
                "my tagliatelle is cut by hand",
                "I simmer ragù for six hours",
                "I fold ravioli with ricotta and spinach",
                "my gnocchi are light as clouds",
            ],
            "market": [
                "I buy tomatoes at the market at dawn",
                "I know every fishmonger by name",
                "I choose lemons from Amalfi",
                "I bargain for truffles in the autumn",
                "the cheese seller saves me the best pecorino",
            ],
            "kitchen": [
                "the kitchen roars during the dinner rush",
                "I shout orders to my line cooks",
                "the ovens make the kitchen hot as a furnace",
                "I taste every sauce before it leaves",
                "we scrub the kitchen clean after midnight",
            ],
        },
    ),
}


def persona_texts(per_sub: int = 20, seed: int = 0) -> list[dict[str, str]]:
    """``per_sub`` texts per sub-theme: ``{"text", "persona", "sub"}``."""
    rng = random.Random(seed)
    rows = []
    for persona, (intro, subs) in PERSONAS.items():
        for sub, clauses in subs.items():
            pairs = list(itertools.permutations(clauses, 2))
            rng.shuffle(pairs)
            for a, b in pairs[:per_sub]:
                rows.append(
                    {
                        "text": f"{intro}. {a[0].upper() + a[1:]}, and {b}.",
                        "persona": persona,
                        "sub": f"{persona}/{sub}",
                    }
                )
    return rows
