"""WordNet 3.0 for nltk's METEOR, found offline: Debian's `wordnet-base`, or nltk's own corpus.

nltk's METEOR matches synonyms through WordNet, which nltk normally downloads; nothing here reaches
the internet. Debian's `wordnet-base` package ships the WordNet 3.0 database (the same release nltk's
`wordnet` corpus holds) in /usr/share/wordnet, without two things nltk's reader expects:

- `lexnames`, the fixed table of the 45 lexicographer files (documented in lexnames(5WN)); it is
  written from `LEXNAMES` below;
- a mapping to nltk's own `wordnet` corpus, which nltk builds when the loaded database is not that
  corpus. This database *is* WordNet 3.0, so the mapping is the identity and is skipped.

nltk only opens corpus files under its data path and refuses symlinks and hard links that lead
elsewhere, so the database files are copied once (28 MB) into mulcot-batch's cache. When no WordNet
is found, METEOR is reported as unavailable with the reason, never approximated.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..weights import cache_dir

#: A WordNet 3.0 `dict` folder to use instead of the Debian one.
WORDNET_ENV = "MULCOT_BATCH_WORDNET"
DEBIAN_WORDNET = Path("/usr/share/wordnet")
DATABASE_FILES = (
    "data.adj", "data.adv", "data.noun", "data.verb",
    "index.adj", "index.adv", "index.noun", "index.verb",
    "adj.exc", "adv.exc", "noun.exc", "verb.exc",
)  # fmt: skip
OPTIONAL_FILES = ("cntlist.rev", "index.sense")
LEXNAMES = """\
adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body
noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location
noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process
noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change
verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation
verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather
adj.ppl""".split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
INSTALL_HINT = "install Debian's wordnet-base (apt-get install wordnet-base) or set $MULCOT_BATCH_WORDNET"


@dataclass(frozen=True)
class WordNet:
    """A loaded WordNet (an nltk corpus reader) and where it came from; `reader` None when absent."""

    reader: Any
    source: str
    unavailable: str | None = None


def lexnames_text() -> str:
    """The `lexnames` file of WordNet 3.0: number, lexicographer file name, syntactic category."""
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def _database_folder() -> Path | None:
    """The WordNet 3.0 dict folder to read: $MULCOT_BATCH_WORDNET, else Debian's, else None."""
    override = os.environ.get(WORDNET_ENV)
    candidates = [Path(override)] if override else [DEBIAN_WORDNET]
    for folder in candidates:
        if all((folder / name).is_file() for name in DATABASE_FILES):
            return folder
    return None


def _staged_copy(source: Path) -> Path:
    """A private copy nltk accepts (plain files under one root, with `lexnames`), made once, atomically."""
    target = cache_dir() / "wordnet-3.0"
    if (target / "lexnames").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        for name in DATABASE_FILES + OPTIONAL_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
        if (source / "lexnames").is_file():
            shutil.copyfile(source / "lexnames", staging / "lexnames")
        else:
            (staging / "lexnames").write_text(lexnames_text())
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "lexnames").is_file():
            raise
    return target


def _reader_class() -> type:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class WordNet30Reader(WordNetCorpusReader):
        """nltk's reader over a WordNet 3.0 database that is not nltk's own copy of it.

        nltk maps synsets of any other database onto its `wordnet` corpus; for WordNet 3.0 that
        mapping is the identity, and building it would need nltk's corpus, which is not there.
        """

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    return WordNet30Reader


@lru_cache(maxsize=1)
def load_wordnet() -> WordNet:
    """The WordNet METEOR uses (loaded once per process, ~5 s), or why there is none."""
    import nltk

    folder = _database_folder()
    if folder is not None:
        try:
            staged = _staged_copy(folder)
        except OSError as exc:
            return WordNet(None, "", f"could not copy WordNet from {folder} into the cache ({exc})")
        if str(staged) not in nltk.data.path:
            nltk.data.path.append(str(staged))  # nltk opens corpus files only under its data path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": not used
            reader = _reader_class()(str(staged), None)
        return WordNet(reader, f"WordNet {reader.get_version()} from {folder}")
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        return WordNet(None, "", f"no WordNet found offline; {INSTALL_HINT}")
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    return WordNet(wordnet, f"WordNet {wordnet.get_version()} from nltk_data")
