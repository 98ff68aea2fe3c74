"""Planted worlds for the basin grain: generated personas with sub-themes, as texts and as vectors.

A *world* is a set of personas, each with 1-4 sub-themes. Its ground truth has two
levels: the persona (the basin a map should find) and the sub-theme (the sub-basin
one level down). Worlds come from a seed and vary everything a grain criterion
could otherwise be tuned to: the number of personas (2-10), sub-themes per persona
(1-4), texts per persona (15-200, up to 10:1 between the largest and the smallest),
the personas themselves (drawn from a bank of 24 unrelated domains, each with its
own vocabulary), the names, the sentence style (five styles, from one clause to an
introduction plus three clauses) and how often a text introduces its persona.

Three kinds:

* ``"structured"``: 2-10 personas, each with 1-4 sub-themes;
* ``"unrelated"`` (a null world): 2-10 personas from different domains, one theme
  each: every persona is its own basin and no two should be merged;
* ``"single"`` (a null world): one persona with 1-4 sub-themes: one basin.

Texts are written from the domain's own verb, object and place pools with a
handful of clause frames (independent of ``personas.py``), for embedding by a real
model; :func:`planted_vectors` draws vectors with the same two-level structure
for tests that do not embed (a persona centre, a sub-theme offset from it, a text
spread around the sub-theme, and a direction all texts share, as sentence
embeddings have).

>>> worlds = make_worlds(200, seed=0)             # doctest: +SKIP
>>> worlds[0].texts[:2], worlds[0].persona[:2]    # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Kind = Literal["structured", "unrelated", "single"]

# domain -> (roles, {sub-theme: (verbs, objects, places)}); each verb fits each object of its sub-theme
DOMAINS: dict[str, tuple[list[str], dict[str, tuple[str, str, str]]]] = {
    "beekeeper": (
        ["a beekeeper in the hills", "a keeper of honeybees"],
        {
            "hives": (
                "check|open|repair|paint",
                "the hives|the brood boxes|the frames|the hive lids",
                "in the apiary|behind the barn|on the hillside",
            ),
            "honey": (
                "harvest|jar|strain|sell",
                "the honey|the wildflower honey|the comb|the beeswax",
                "at the farmers market|in the kitchen|every August",
            ),
            "swarms": (
                "catch|follow|calm|rehouse",
                "the swarms|the wild colonies|the queens|the drifting bees",
                "in the orchard|on warm afternoons|from the chimney",
            ),
            "stings": (
                "ignore|treat|count|fear",
                "the stings|the swollen fingers|the bites|the angry guards",
                "through my veil|every single summer|without complaint",
            ),
        },
    ),
    "lighthouse": (
        ["a lighthouse keeper on a rocky island", "the keeper of an old lighthouse"],
        {
            "lamp": (
                "polish|light|trim|tend",
                "the great lamp|the lens|the wicks|the brass fittings",
                "at dusk|in the lantern room|before every storm",
            ),
            "storms": (
                "watch|log|brace for|wait out",
                "the gales|the storms|the breaking waves|the winter squalls",
                "from the gallery|through the long night|on the cliffs",
            ),
            "ships": (
                "warn|signal|count|guide",
                "the passing ships|the fishing boats|the ferries|the tankers",
                "past the reef|in the fog|across the strait",
            ),
            "solitude": (
                "enjoy|endure|write about|fill",
                "the silence|the empty months|the solitude|the long evenings",
                "with only gulls for company|far from the mainland|by candlelight",
            ),
        },
    ),
    "drummer": (
        ["a jazz drummer", "a session drummer in a small club band"],
        {
            "rhythm": (
                "practise|count|play|swing",
                "the triplets|the odd meters|the brush patterns|the backbeat",
                "with a metronome|for hours|on a practice pad",
            ),
            "gigs": (
                "play|book|rehearse|survive",
                "the late gigs|the club sets|the jam sessions|the festival shows",
                "downtown|until three in the morning|with the quartet",
            ),
            "kit": (
                "tune|clean|haul|upgrade",
                "the snare|the cymbals|the kick drum|the old tom-toms",
                "in the van|before the show|up the stairs",
            ),
            "records": (
                "collect|study|transcribe|spin",
                "the vinyl records|the old jazz albums|the bebop solos|the live recordings",
                "at home|on Sunday mornings|with headphones on",
            ),
        },
    ),
    "marine_biologist": (
        ["a marine biologist", "a scientist who studies the ocean"],
        {
            "reefs": (
                "survey|map|photograph|restore",
                "the coral reefs|the bleached corals|the reef fish|the sea fans",
                "underwater|off the atoll|at low tide",
            ),
            "whales": (
                "track|tag|listen to|follow",
                "the humpback whales|the whale songs|the orca pods|the migrating whales",
                "from the research boat|through hydrophones|along the coast",
            ),
            "lab": (
                "analyse|freeze|label|sequence",
                "the water samples|the plankton|the tissue samples|the sediment cores",
                "in the lab|late at night|under the microscope",
            ),
            "dives": (
                "plan|log|lead|dream about",
                "the dives|the deep dives|the night dives|the cave dives",
                "with my dive buddy|in cold water|at dawn",
            ),
        },
    ),
    "trucker": (
        ["a long-haul truck driver", "a trucker who crosses the country"],
        {
            "road": (
                "drive|know|cross|ride",
                "the highways|the interstate|the mountain passes|the endless miles",
                "through the night|across three states|in heavy rain",
            ),
            "cargo": (
                "haul|load|strap down|deliver",
                "the freight|the frozen food|the steel coils|the pallets",
                "to the warehouse|before sunrise|on a tight schedule",
            ),
            "diners": (
                "stop at|eat at|rate|miss",
                "the truck stops|the roadside diners|the all-night cafes|the greasy spoons",
                "off the exit|at two in the morning|along route nine",
            ),
            "home": (
                "call|miss|visit|text",
                "my kids|my wife|my old dog|my family",
                "from the cab|every evening|twice a month",
            ),
        },
    ),
    "baker": (
        ["a baker in a village bakery", "the baker on the corner"],
        {
            "bread": (
                "knead|shape|bake|score",
                "the sourdough|the rye loaves|the baguettes|the dough",
                "at four in the morning|in the stone oven|by hand",
            ),
            "pastry": (
                "fold|glaze|fill|roll",
                "the croissants|the fruit tarts|the puff pastry|the cinnamon buns",
                "with butter|for the weekend|on the marble counter",
            ),
            "flour": (
                "order|mill|sift|store",
                "the flour|the whole wheat|the spelt|the grain sacks",
                "from the mill|in the cellar|by the sack",
            ),
            "customers": (
                "greet|serve|know|remember",
                "the regulars|the early customers|the schoolchildren|the old neighbours",
                "at the counter|every morning|by name",
            ),
        },
    ),
    "astronaut": (
        ["an astronaut on the space station", "a flight engineer in orbit"],
        {
            "spacewalks": (
                "prepare for|train for|perform|remember",
                "the spacewalks|the repairs outside|the tethered walks|the airlock checks",
                "above the Earth|in my suit|for seven hours",
            ),
            "experiments": (
                "run|monitor|record|repeat",
                "the experiments|the plant growth trials|the crystal tests|the muscle scans",
                "in microgravity|in the lab module|every shift",
            ),
            "earth": (
                "photograph|watch|admire|spot",
                "the Earth below|the auroras|the city lights|the hurricanes",
                "from the cupola|through the window|sixteen times a day",
            ),
            "zero_g": (
                "chase|strap down|float with|adapt to",
                "the floating crumbs|the loose tools|the water droplets|my sleeping bag",
                "in weightlessness|without gravity|in the cabin",
            ),
        },
    ),
    "librarian": (
        ["a librarian in a public library", "the librarian of a small town"],
        {
            "books": (
                "shelve|catalogue|repair|recommend",
                "the books|the new novels|the old atlases|the returned paperbacks",
                "in the stacks|by the Dewey number|on quiet afternoons",
            ),
            "readers": (
                "help|guide|welcome|sign up",
                "the readers|the students|the retirees|the new members",
                "at the desk|with a smile|on Saturdays",
            ),
            "archive": (
                "digitise|preserve|index|dust",
                "the archive|the old newspapers|the town records|the rare manuscripts",
                "in the basement|with gloves on|one page at a time",
            ),
            "story_time": (
                "host|read aloud|plan|act out",
                "story time|the picture books|the fairy tales|the puppet shows",
                "for the toddlers|on Wednesday mornings|on the rug",
            ),
        },
    ),
    "firefighter": (
        ["a firefighter", "a firefighter at the central station"],
        {
            "fires": (
                "fight|put out|attack|contain",
                "the house fires|the blazes|the kitchen fires|the forest fires",
                "with the hose|in full gear|through the smoke",
            ),
            "rescues": (
                "carry|pull out|rescue|search for",
                "the trapped people|the children|the injured|the stranded pets",
                "from burning buildings|down the ladder|in the dark",
            ),
            "station": (
                "wash|check|stock|maintain",
                "the engine|the ladders|the hoses|the breathing tanks",
                "at the station|every shift|in the bay",
            ),
            "drills": (
                "run|lead|repeat|time",
                "the drills|the ladder drills|the rope training|the hazmat exercises",
                "in the yard|twice a week|with the new recruits",
            ),
        },
    ),
    "luthier": (
        ["a violin maker", "a luthier with a small workshop"],
        {
            "wood": (
                "choose|season|split|tap",
                "the spruce|the maple|the tonewood|the old planks",
                "in the workshop|for years|by ear",
            ),
            "carving": (
                "carve|plane|shape|scrape",
                "the scrolls|the violin tops|the f-holes|the arching",
                "with a gouge|under the lamp|very slowly",
            ),
            "varnish": (
                "mix|brush on|polish|rub down",
                "the varnish|the amber coats|the oil finish|the resin",
                "in thin layers|in the sunlight|over many weeks",
            ),
            "players": (
                "fit|adjust|listen to|repair for",
                "the violinists|the cellists|the orchestra players|the students",
                "before a concert|in the back room|with great care",
            ),
        },
    ),
    "dairy_farmer": (
        ["a dairy farmer", "a farmer with a herd of cows"],
        {
            "cows": (
                "milk|feed|name|call in",
                "the cows|the heifers|the calves|the herd",
                "at dawn|in the milking parlour|from the pasture",
            ),
            "fields": (
                "plough|mow|fence|seed",
                "the fields|the hay meadows|the clover|the back pasture",
                "with the tractor|in June|after the rain",
            ),
            "weather": (
                "watch|curse|plan around|worry about",
                "the weather|the frost|the dry spells|the forecast",
                "every evening|all season|with my neighbours",
            ),
            "cheese": (
                "make|press|age|turn",
                "the cheese|the cheddar wheels|the soft curds|the butter",
                "in the dairy|in the cool cellar|for months",
            ),
        },
    ),
    "mountain_guide": (
        ["a mountain guide in the Alps", "a climbing guide"],
        {
            "climbs": (
                "lead|climb|scout|plan",
                "the ridges|the north faces|the rock routes|the summits",
                "before dawn|on the rope|above the glacier",
            ),
            "clients": (
                "rope up|coach|reassure|bring down",
                "my clients|the beginners|the nervous climbers|the tired hikers",
                "on steep ground|safely|step by step",
            ),
            "avalanches": (
                "read|test|dig through|respect",
                "the snowpack|the avalanche slopes|the cornices|the wind slabs",
                "in winter|with a probe|after heavy snow",
            ),
            "huts": (
                "reach|book|sleep in|love",
                "the mountain huts|the bivouacs|the refuges|the alpine cabins",
                "at nightfall|above the clouds|with the team",
            ),
        },
    ),
    "detective": (
        ["a private detective", "a detective in the city"],
        {
            "cases": (
                "solve|take on|crack|reopen",
                "the cases|the cold cases|the murders|the missing persons files",
                "one by one|for my clients|at my desk",
            ),
            "clues": (
                "collect|follow|piece together|examine",
                "the clues|the fingerprints|the receipts|the footprints",
                "at the scene|with a magnifying glass|late at night",
            ),
            "suspects": (
                "question|tail|watch|corner",
                "the suspects|the witnesses|the informants|the liars",
                "in the rain|from my car|in back alleys",
            ),
            "office": (
                "sit in|lock up|pay rent for|clean up",
                "my office|the filing cabinets|the dusty blinds|the old typewriter",
                "above the pawn shop|at midnight|alone",
            ),
        },
    ),
    "teacher": (
        ["a kindergarten teacher", "a teacher of five-year-olds"],
        {
            "lessons": (
                "teach|plan|sing|practise",
                "the alphabet|the counting songs|the colours|the shapes",
                "in the classroom|every morning|with puppets",
            ),
            "crafts": (
                "cut out|glue|paint|hang up",
                "the paper stars|the finger paintings|the clay animals|the collages",
                "on the walls|at the craft table|before the holidays",
            ),
            "parents": (
                "meet|reassure|email|chat with",
                "the parents|the worried mothers|the grandparents|the fathers",
                "at pickup time|at the gate|during conferences",
            ),
            "playground": (
                "supervise|watch|referee|comfort",
                "the playground|the sandpit games|the scraped knees|the tag games",
                "at recess|in the sun|every break",
            ),
        },
    ),
    "tailor": (
        ["a tailor", "a tailor with a shop on the high street"],
        {
            "suits": (
                "cut|sew|fit|press",
                "the suits|the jackets|the waistcoats|the trousers",
                "to measure|by hand|in my shop",
            ),
            "fabric": (
                "choose|order|feel|stack",
                "the wool|the tweed|the linen|the silk linings",
                "from the mills|on the shelves|by the bolt",
            ),
            "alterations": (
                "hem|take in|let out|mend",
                "the sleeves|the hems|the wedding dresses|the torn seams",
                "with pins in my mouth|while you wait|on Fridays",
            ),
            "needles": (
                "thread|sharpen|oil|repair",
                "the needles|the sewing machine|the thimbles|the shears",
                "under the lamp|every evening|with care",
            ),
        },
    ),
    "fisher": (
        ["a fisherman on the north sea", "a fisher with an old trawler"],
        {
            "nets": (
                "mend|cast|haul|dry",
                "the nets|the lines|the lobster pots|the trawl",
                "on the deck|before dawn|in the harbour",
            ),
            "catch": (
                "land|gut|sort|ice",
                "the cod|the herring|the mackerel|the catch",
                "at sea|in the hold|on the quay",
            ),
            "boat": (
                "paint|repair|fuel|steer",
                "the boat|the old trawler|the engine|the hull",
                "in the dry dock|through the swell|every spring",
            ),
            "sea": (
                "read|fear|respect|ride",
                "the sea|the tides|the rough swells|the currents",
                "in winter|far from land|all my life",
            ),
        },
    ),
    "archaeologist": (
        ["an archaeologist", "a field archaeologist"],
        {
            "digs": (
                "dig|excavate|survey|trench",
                "the site|the ruins|the burial mound|the old walls",
                "in the desert|under the sun|with a trowel",
            ),
            "finds": (
                "clean|catalogue|date|sketch",
                "the pottery shards|the coins|the bones|the bronze tools",
                "in the field tent|with a soft brush|carefully",
            ),
            "history": (
                "study|reconstruct|lecture on|imagine",
                "the ancient cities|the lost kingdoms|the trade routes|the old rituals",
                "at the university|in my books|for my students",
            ),
            "museums": (
                "lend|display|label|visit",
                "the artefacts|the exhibits|the display cases|the collections",
                "at the museum|behind glass|every winter",
            ),
        },
    ),
    "chess_player": (
        ["a chess player", "a chess grandmaster"],
        {
            "openings": (
                "study|prepare|memorise|test",
                "the openings|the Sicilian lines|the gambits|the novelties",
                "before tournaments|with my coach|at home",
            ),
            "tournaments": (
                "play|travel to|win|lose",
                "the tournaments|the rapid events|the long games|the final rounds",
                "abroad|under the clock|every month",
            ),
            "endgames": (
                "calculate|practise|analyse|grind out",
                "the endgames|the rook endings|the pawn races|the long positions",
                "for hours|on the board|move by move",
            ),
            "engines": (
                "check|consult|argue with|run",
                "the engines|the computer lines|the analysis|the evaluations",
                "after each game|late at night|on my laptop",
            ),
        },
    ),
    "potter": (
        ["a potter", "a ceramicist with a studio"],
        {
            "wheel": (
                "throw|centre|trim|pull up",
                "the bowls|the vases|the clay|the mugs",
                "on the wheel|in the studio|all morning",
            ),
            "kiln": (
                "load|fire|unload|watch",
                "the kiln|the bisque ware|the glazed pots|the test tiles",
                "overnight|at high heat|twice a week",
            ),
            "glazes": (
                "mix|dip|test|brush on",
                "the glazes|the celadon|the ash glaze|the oxides",
                "in buckets|by weight|on every pot",
            ),
            "market": (
                "sell|price|wrap|display",
                "my pots|the mugs|the serving bowls|the plates",
                "at the craft fair|online|on a wooden table",
            ),
        },
    ),
    "pirate": (
        ["a pirate captain", "the captain of a pirate ship"],
        {
            "treasure": (
                "bury|hunt for|count|hide",
                "the treasure|the gold doubloons|the jewels|the stolen chests",
                "on a deserted island|under the palms|at midnight",
            ),
            "ship": (
                "command|sail|patch|arm",
                "my ship|the galleon|the sails|the cannons",
                "across the seven seas|into the wind|through the storm",
            ),
            "crew": (
                "lead|pay|feed|threaten",
                "my crew|the deckhands|the first mate|the cabin boy",
                "on deck|with rum|every voyage",
            ),
            "navy": (
                "outrun|fool|fight|escape",
                "the navy|the warships|the admirals|the patrols",
                "in the fog|at full sail|off the coast",
            ),
        },
    ),
    "dragon": (
        ["a dragon in a mountain cave", "an old red dragon"],
        {
            "hoard": (
                "guard|count|sleep on|polish",
                "my hoard|the golden coins|the crowns|the gemstones",
                "in my cave|for centuries|every night",
            ),
            "flight": (
                "soar over|circle|glide above|scorch",
                "the valleys|the mountains|the forests|the villages",
                "on my wings|at dusk|high above",
            ),
            "knights": (
                "scare off|outwit|burn|chase away",
                "the knights|the heroes|the treasure hunters|the princes",
                "with fire|from my lair|every spring",
            ),
            "fire": (
                "breathe|kindle|practise|hold back",
                "fire|the flames|smoke|hot embers",
                "from my throat|when angry|across the sky",
            ),
        },
    ),
    "robot_vacuum": (
        ["a robot vacuum cleaner", "a small robotic vacuum"],
        {
            "dust": (
                "suck up|collect|hunt|chase",
                "the dust|the crumbs|the pet hair|the dirt",
                "under the sofa|along the skirting|every afternoon",
            ),
            "charging": (
                "return to|find|need|dock at",
                "my charger|the base|the charging dock|the power",
                "when my battery is low|at night|after each run",
            ),
            "obstacles": (
                "bump into|avoid|map|get stuck on",
                "the chair legs|the cables|the rugs|the stairs",
                "in the hallway|every single day|again and again",
            ),
            "owners": (
                "annoy|please|follow|wake up",
                "my owners|the family|the cat|the children",
                "with my beeping|in the morning|when I get stuck",
            ),
        },
    ),
    "ghost": (
        ["a ghost in an old manor house", "the ghost of the east wing"],
        {
            "haunting": (
                "haunt|drift through|wander|roam",
                "the corridors|the attic|the old ballroom|the staircase",
                "at midnight|in chains|for two hundred years",
            ),
            "scares": (
                "frighten|startle|spook|chill",
                "the visitors|the new owners|the tourists|the maids",
                "with cold whispers|from the shadows|on stormy nights",
            ),
            "past": (
                "remember|mourn|relive|long for",
                "my old life|my lost love|the grand parties|my family",
                "endlessly|in the moonlight|by the portrait",
            ),
            "objects": (
                "rattle|move|slam|flicker",
                "the doors|the candles|the windows|the old piano",
                "in the night|without a sound|when no one looks",
            ),
        },
    ),
    "oak_tree": (
        ["an old oak tree", "an oak tree that has stood for centuries"],
        {
            "seasons": (
                "feel|welcome|endure|count",
                "the seasons|the winters|the spring rains|the summers",
                "through my bark|year after year|in silence",
            ),
            "roots": (
                "spread|sink|grow|drink through",
                "my roots|the deep roots|the soil|the groundwater",
                "under the meadow|ever deeper|in the dark earth",
            ),
            "animals": (
                "shelter|feed|house|watch",
                "the squirrels|the owls|the woodpeckers|the deer",
                "in my branches|beneath my canopy|all year",
            ),
            "acorns": (
                "drop|scatter|grow|lose",
                "my acorns|the seeds|the saplings|the leaves",
                "in autumn|on the ground|by the thousand",
            ),
        },
    ),
}

NAMES = [
    "Ada",
    "Bram",
    "Cleo",
    "Dario",
    "Edith",
    "Femi",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Lars",
    "Mina",
    "Nils",
    "Olga",
    "Pavel",
    "Quinn",
    "Rosa",
    "Sami",
    "Tove",
    "Umar",
    "Vera",
    "Wim",
    "Xenia",
    "Yusuf",
    "Zora",
    "Anouk",
    "Bruno",
    "Carys",
    "Dmitri",
    "Elif",
    "Fabian",
    "Gwen",
    "Hamid",
    "Ilse",
    "Joaquin",
    "Katja",
    "Luca",
    "Marit",
    "Nadia",
    "Omar",
    "Petra",
    "Rafael",
    "Saskia",
    "Tariq",
    "Ulla",
    "Viggo",
    "Wanda",
    "Yara",
    "Zeno",
]

INTROS = [
    "I'm {name}, {role}",
    "my name is {name} and I am {role}",
    "{name} here, {role}",
    "people know me as {name}, {role}",
    "I work as {role}",
    "I am {role} called {name}",
]

CLAUSES = [
    "I {verb} {obj} {place}",
    "I often {verb} {obj}",
    "every day I {verb} {obj} {place}",
    "I like to {verb} {obj} {place}",
    "my work is to {verb} {obj}",
    "I have learned to {verb} {obj} {place}",
    "I still {verb} {obj} {place}",
    "most days I {verb} {obj}",
]

STYLES = ("intro_two", "three", "intro_semicolon", "one", "about_me")


@dataclass
class World:
    """One generated world: texts with their persona (basin) and sub-theme (sub-basin) labels."""

    kind: Kind
    seed: int
    texts: list[str]
    persona: np.ndarray
    sub: np.ndarray
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def n_personas(self) -> int:
        return len(np.unique(self.persona))


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _clause(rng: np.random.Generator, theme: tuple[str, str, str]) -> str:
    verbs, objects, places = (part.split("|") for part in theme)
    frame = CLAUSES[rng.integers(len(CLAUSES))]
    place = places[rng.integers(len(places))] if rng.random() < 0.7 else ""
    out = frame.format(verb=verbs[rng.integers(len(verbs))], obj=objects[rng.integers(len(objects))], place=place)
    return " ".join(out.split())


def _text(rng: np.random.Generator, style: str, intro: str | None, theme: tuple[str, str, str]) -> str:
    c = [_clause(rng, theme) for _ in range(3)]
    if style == "one":
        return f"{_cap(intro)}, and {c[0]}." if intro else f"{_cap(c[0])}."
    if style == "intro_two":
        return f"{_cap(intro)}. {_cap(c[0])}, and {c[1]}." if intro else f"{_cap(c[0])}, and {c[1]}."
    if style == "intro_semicolon":
        head = f"{_cap(intro)}; " if intro else ""
        return _cap(f"{head}{c[0]}, {c[1]} and {c[2]}.")
    if style == "about_me":
        return f"About me: {intro}. {_cap(c[0])}. {_cap(c[1])}." if intro else f"About me: {c[0]}. {_cap(c[1])}."
    parts = c if intro is None else [intro, c[0], c[1]]
    order = rng.permutation(3)
    return " ".join(f"{_cap(parts[i])}." for i in order)


def _sizes(rng: np.random.Generator, n: int, low: int = 15, high: int = 200) -> np.ndarray:
    """Texts per persona in [low, high], largest to smallest up to 10:1 (log-uniform shares)."""
    top = int(rng.integers(low * 2, high + 1))
    ratio = float(np.exp(rng.uniform(0, np.log(10)))) if n > 1 else 1.0
    shares = np.exp(rng.uniform(-np.log(ratio), 0, size=n))
    shares[0], shares[-1] = 1.0, 1.0 / ratio  # the extremes are there
    return np.clip(np.round(top * shares), low, high).astype(int)


def make_world(
    seed: int,
    kind: Kind = "structured",
    *,
    n_personas: int | None = None,
    per_persona: int | None = None,
    sub_themes: int | None = None,
    style: str | None = None,
) -> World:
    """A world from ``seed``: its personas, sub-themes, sizes, names and sentence style.

    ``n_personas``, ``per_persona`` (texts), ``sub_themes`` (per persona) and ``style``
    fix what is otherwise drawn.
    """
    rng = np.random.default_rng(seed)
    domains = list(DOMAINS)
    drawn = 1 if kind == "single" else int(rng.integers(2, 11))
    n_personas = n_personas or drawn
    picked = [domains[i] for i in rng.choice(len(domains), size=n_personas, replace=False)]
    drawn_style = STYLES[rng.integers(len(STYLES))]
    style = style or drawn_style
    p_intro = float(rng.uniform(0.5, 1.0))
    names = rng.choice(NAMES, size=n_personas, replace=False)
    sizes = _sizes(rng, n_personas)
    if per_persona is not None:
        sizes = np.full(n_personas, per_persona)
    texts: list[str] = []
    persona: list[int] = []
    sub: list[int] = []
    subs_per: list[int] = []
    for p, (domain, size) in enumerate(zip(picked, sizes, strict=True)):
        roles, themes = DOMAINS[domain]
        role = roles[rng.integers(len(roles))]
        n_subs = 1
        if kind != "unrelated":
            drawn_subs = int(rng.integers(1, 5))  # drawn even when fixed: the rest of the world stays the same
            n_subs = sub_themes or drawn_subs
        theme_names = [list(themes)[i] for i in rng.choice(len(themes), size=n_subs, replace=False)]
        weights = rng.dirichlet(np.full(n_subs, 4.0))
        which = rng.choice(n_subs, size=int(size), p=weights)
        subs_per.append(n_subs)
        intro_frames = [INTROS[i] for i in rng.choice(len(INTROS), size=3, replace=False)]
        for t in which:
            intro = None
            if rng.random() < p_intro:
                intro = intro_frames[rng.integers(3)].format(name=names[p], role=role)
            texts.append(_text(rng, style, intro, themes[theme_names[t]]))
            persona.append(p)
            sub.append(p * 4 + int(t))
    spec = {
        "domains": picked,
        "sizes": sizes.tolist(),
        "sub_themes": subs_per,
        "style": style,
        "p_intro": round(p_intro, 3),
    }
    return World(kind, seed, texts, np.asarray(persona), np.asarray(sub), spec)


def make_worlds(n: int, seed: int = 0, *, null_share: float = 0.25) -> list[World]:
    """``n`` worlds from ``seed``: a ``null_share`` of null worlds (half unrelated, half single), then structured."""
    rng = np.random.default_rng(seed)
    n_null = round(n * null_share)
    kinds: list[Kind] = ["unrelated"] * (n_null - n_null // 2) + ["single"] * (n_null // 2)
    kinds += ["structured"] * (n - n_null)
    seeds = rng.integers(0, 2**31, size=n)
    return [make_world(int(s), k) for s, k in zip(seeds, kinds, strict=True)]


def planted_vectors(
    world: World,
    seed: int = 0,
    *,
    dim: int = 64,
    shared: tuple[float, float] = (0.5, 0.72),
    persona: tuple[float, float] = (0.85, 1.15),
    theme: tuple[float, float] = (0.45, 0.7),
    spread: tuple[float, float] = (0.6, 0.9),
) -> np.ndarray:
    """Unit vectors with the world's two-level structure, one row per text.

    A text is ``shared * c + b * persona_p + theme * theme_s + spread * noise``: ``c`` a
    direction every text shares (as in a sentence embedding, where unrelated texts
    are still similar), ``persona_p`` and ``theme_s`` random directions of its persona
    and sub-theme, the noise isotropic. ``b`` is the persona weight drawn from
    ``persona`` where the text introduces its persona (with the world's ``p_intro``)
    and 0.3 of it elsewhere, so some texts carry the persona and the others mostly
    their sub-theme. Each weight is drawn once per world from its range. With the
    defaults the 0.5 % link between two sub-basins (``basins._grain``) has quartiles
    about 0.25-0.31 within a persona and 0.54-0.64 between personas, as texts
    embedded by MiniLM have in the worlds of :func:`make_worlds`.
    """
    rng = np.random.default_rng([seed, world.seed])
    a, b, t, e = (float(rng.uniform(*r)) for r in (shared, persona, theme, spread))

    def unit(n: int) -> np.ndarray:
        v = rng.normal(size=(n, dim))
        return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True))

    common = unit(1)[0]
    personas = np.unique(world.persona)
    subs = np.unique(world.sub)
    centre = dict(zip(personas.tolist(), unit(len(personas)), strict=True))
    offset = dict(zip(subs.tolist(), unit(len(subs)), strict=True))
    weight = np.where(rng.random(len(world.sub)) < world.spec.get("p_intro", 1.0), b, 0.3 * b)
    points = (
        a * common
        + weight[:, None] * np.stack([centre[int(p)] for p in world.persona])
        + t * np.stack([offset[int(s)] for s in world.sub])
        + e * rng.normal(size=(len(world.sub), dim)) / np.sqrt(dim)
    )
    return np.asarray(points / np.linalg.norm(points, axis=1, keepdims=True), dtype=np.float32)


def planted_sub_basins(world: World, vectors: np.ndarray, seed: int = 0, *, split: float = 0.3) -> np.ndarray:
    """Sub-basin labels as a density clustering would leave them: the sub-themes, some split in two, 2 % noise.

    A sub-theme of more than 20 texts is cut in two along a random direction with
    probability ``split`` (HDBSCAN often finds two tight groups in one theme); then
    2 % of the texts become noise (-1).
    """
    rng = np.random.default_rng([seed, world.seed, 1])
    labels = world.sub.copy()
    fresh = int(labels.max()) + 1
    for s in np.unique(world.sub):
        rows = np.flatnonzero(world.sub == s)
        if len(rows) > 20 and rng.random() < split:
            direction = rng.normal(size=vectors.shape[1])
            side = (vectors[rows] - vectors[rows].mean(axis=0)) @ direction > 0
            labels[rows[side]] = fresh
            fresh += 1
    labels[rng.random(len(labels)) < 0.02] = -1
    return labels


def false_merge(persona: np.ndarray, labels: np.ndarray) -> bool:
    """Whether two personas share a basin: each persona's basin is the one holding most of its non-noise texts."""
    home = []
    for p in np.unique(persona):
        mine = labels[(persona == p) & (labels >= 0)]
        if len(mine):
            home.append(int(np.bincount(mine).argmax()))
    return len(set(home)) < len(home)


def split(labels: np.ndarray) -> bool:
    """Whether a one-persona world came out as more than one basin (noise aside)."""
    return len(np.unique(labels[labels >= 0])) > 1
