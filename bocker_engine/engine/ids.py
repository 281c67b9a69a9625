"""IDs, generated names, and lookup by full ID, exact name or unique ID prefix."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from typing import TypeVar

from bocker_engine.errors import InvalidParameter, NotFound

T = TypeVar("T")

_HEX = re.compile(r"^[0-9a-f]+$")
NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

# moby pkg/namesgenerator, abridged.
ADJECTIVES = (
    "admiring adoring affectionate agitated amazing angry awesome beautiful blissful bold boring "
    "brave busy charming clever compassionate competent condescending confident cool cranky crazy "
    "dazzling determined distracted dreamy eager ecstatic elastic elated elegant eloquent epic "
    "exciting fervent festive flamboyant focused friendly frosty funny gallant gifted goofy "
    "gracious great happy hardcore heuristic hopeful hungry infallible inspiring intelligent "
    "interesting jolly jovial keen kind laughing loving lucid magical modest musing mystifying "
    "naughty nervous nice nifty nostalgic objective optimistic peaceful pedantic pensive practical "
    "priceless quirky quizzical recursing relaxed reverent romantic sad serene sharp silly "
    "sleepy stoic strange stupefied suspicious sweet tender thirsty trusting unruffled upbeat "
    "vibrant vigilant vigorous wizardly wonderful xenodochial youthful zealous zen"
).split()
SURNAMES = (
    "agnesi albattani allen almeida antonelli archimedes ardinghelli aryabhata austin babbage "
    "banach bardeen bartik bassi beaver bell benz bhabha bhaskara black blackburn blackwell bohr "
    "booth borg bose bouman boyd brahmagupta brattain brown buck burnell cannon carson cartwright "
    "carver cerf chandrasekhar chaplygin chatelet chatterjee chaum chebyshev clarke cohen colden "
    "cori cray curie curran darwin davinci dewdney dhawan diffie dijkstra dirac driscoll dubinsky "
    "easley edison einstein elbakyan elgamal elion ellis engelbart euclid euler faraday feistel "
    "fermat fermi feynman franklin gagarin galileo galois ganguly gates gauss germain goldberg "
    "goldstine goldwasser golick goodall gould greider grothendieck haibt hamilton haslett hawking "
    "heisenberg hellman hermann herschel hertz heyrovsky hodgkin hofstadter hoover hopper hugle "
    "hypatia ishizaka jackson jang jemison jennings jepsen johnson joliot jones kalam kapitsa kare "
    "keldysh keller kepler khayyam khorana kilby kirch knuth kowalevski lalande lamarr lamport "
    "leakey leavitt lederberg lehmann lewin lichterman liskov lovelace lumiere mahavira margulis "
    "matsumoto maxwell mayer mccarthy mcclintock mclaren mclean mcnulty meitner mendel mendeleev "
    "meninsky merkle mestorf mirzakhani montalcini moore morse moser murdock napier nash neumann "
    "newton nightingale nobel noether northcutt noyce panini pare pascal pasteur payne perlman "
    "pike poincare poitras proskuriakova ptolemy raman ramanujan rhodes ride ritchie robinson "
    "roentgen rosalind rubin saha sammet sanderson satoshi shamir shannon shaw shirley shockley "
    "shtern sinoussi snyder solomon spence stonebraker sutherland swanson swartz swirles taussig "
    "tesla tharp thompson torvalds tu turing varahamihira vaughan villani visvesvaraya volhard "
    "wescoff wilbur wiles williams williamson wilson wing wozniak wright wu yalow yonath zhukovsky"
).split()


def new_id() -> str:
    return secrets.token_hex(32)


def random_name(taken: Callable[[str], bool]) -> str:
    """adjective_surname, unique; digits are appended after many collisions, as moby does."""
    for attempt in range(1000):
        name = f"{secrets.choice(ADJECTIVES)}_{secrets.choice(SURNAMES)}"
        if name == "boring_wozniak":  # Steve Wozniak is not boring (moby's rule)
            continue
        if attempt >= 10:
            name += str(secrets.randbelow(10))
        if not taken(name):
            return name
    raise InvalidParameter("could not generate a unique container name")


def by_prefix(prefix: str, ids: Iterable[str], what: str = "") -> str | None:
    """The single ID starting with `prefix`; None if none; 400 if ambiguous (dockerd's text)."""
    if not prefix or not _HEX.match(prefix):
        return None
    found = None
    for i in ids:
        if i.startswith(prefix):
            if found is not None:
                raise InvalidParameter(f"multiple IDs found with provided prefix: {prefix}")
            found = i
    return found


def lookup(
    ref: str,
    by_id: dict[str, T],
    by_name: dict[str, str],
    not_found: str,
) -> T:
    """Resolve full ID, then exact name (with or without the leading /), then ID prefix."""
    if ref in by_id:
        return by_id[ref]
    name = ref.lstrip("/")
    if name in by_name:
        return by_id[by_name[name]]
    found = by_prefix(ref, by_id.keys())
    if found is None:
        raise NotFound(not_found)
    return by_id[found]
