"""Words for the pages: real English sentences from stdlib docstrings, plus names, addresses and dates.

Everything is drawn from the document's one rng, so a document's text is fixed by (index, seed).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Pure-Python stdlib modules with plenty of prose in their docstrings.
_CORPUS_MODULES = (
    "argparse", "asyncio.tasks", "calendar", "collections", "concurrent.futures._base", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "doctest", "email.message",
    "enum", "fractions", "ftplib", "functools", "gettext", "glob", "heapq", "hmac", "html.parser",
    "http.client", "http.cookiejar", "imaplib", "inspect", "ipaddress", "json", "locale", "logging",
    "mailbox", "mimetypes", "multiprocessing.managers", "multiprocessing.pool", "optparse", "pathlib",
    "pdb", "pickle", "pprint", "pydoc", "queue", "random", "sched", "secrets", "selectors", "shlex",
    "shutil", "smtplib", "socket", "sqlite3", "ssl", "statistics", "string", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "traceback", "turtle", "typing",
    "unittest.case", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "xml.dom.minidom",
    "zipfile",
)
_NOT_PROSE = set("=<>{}[]|\\_#@$%^~`*/")
_PROSE_WORD = re.compile(r"[A-Za-z][a-z'-]*[,.;:!?]?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _prose_sentences(doc: str) -> list[str]:
    """Sentences of running prose in one docstring; code, tables and argument lists are dropped."""
    out = []
    for para in doc.split("\n\n"):
        lines = para.split("\n")
        if any(ln[:1].isspace() or ln.startswith((">>>", "...")) for ln in lines):
            continue  # indented lines are examples, field lists or tables
        for s in _SENTENCE_END.split(" ".join(ln.strip() for ln in lines)):
            s = " ".join(s.split())
            words = s.split()
            if not 5 <= len(words) <= 40 or s[-1] not in ".!?" or _NOT_PROSE.intersection(s):
                continue
            if sum(bool(_PROSE_WORD.fullmatch(w)) for w in words) >= 0.85 * len(words):
                out.append(s)
    return out


@functools.cache
def _corpus() -> tuple[str, ...]:
    """Unique prose sentences, in a fixed order; built once per process (about a second)."""
    sentences: list[str] = []
    for name in _CORPUS_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    sentences += _prose_sentences(doc)
    sentences = list(dict.fromkeys(sentences))
    if len(sentences) < 500:
        raise RuntimeError(f"synth: only {len(sentences)} sentences found in the standard library sources; "
                           "the generator needs the stdlib .py files")
    return tuple(sentences)


_SMALL_WORDS = frozenset("a an the of and or to in on for with by as at from into is are".split())
# Function words that should not start or end a heading or a table label.
_STOP_WORDS = _SMALL_WORDS | frozenset(
    "that this these those be been being it its if not but which when so can will may must should would "
    "there then than has have had was were do does no all any each such only also we you they he she them "
    "their your our who whose what where how whether until unless otherwise".split())

_FIRST_NAMES = ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
                "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
                "Charles", "Karen", "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Margaret", "Paul",
                "Sandra", "Steven", "Emily", "Andrew", "Michelle", "Kevin", "Carol", "Brian", "Amanda",
                "George", "Aisha", "Wei", "Priya", "Carlos", "Fatima", "Hiroshi", "Olga", "Mateo", "Ingrid",
                "Kwame", "Elena", "Omar", "Sofia")
_LAST_NAMES = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
               "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Taylor", "Moore", "Jackson", "Martin",
               "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen",
               "King", "Wright", "Scott", "Nguyen", "Hill", "Green", "Adams", "Baker", "Nelson", "Carter",
               "Mitchell", "Roberts", "Chen", "Patel", "Kim", "Okafor", "Schmidt", "Rossi", "Novak", "Larsen",
               "Tanaka", "Dubois")
_STREETS = ("Main Street", "Oak Avenue", "Maple Drive", "Cedar Lane", "Park Road", "Elm Street", "Hill Road",
            "Lake View", "Church Street", "Mill Lane", "River Road", "Station Road", "High Street",
            "Market Square", "Bridge Street", "Harbor Way")
_CITIES = ("Springfield, IL", "Portland, OR", "Madison, WI", "Austin, TX", "Boulder, CO", "Raleigh, NC",
           "Albany, NY", "Salem, MA", "Dayton, OH", "Tucson, AZ", "Fresno, CA", "Reno, NV")
_COMPANY_SUFFIXES = ("& Sons", "Associates", "Consulting", "Industries", "Holdings Ltd", "Systems Inc.",
                     "Partners", "Logistics", "Laboratories", "Group", "Supply Co.", "Analytics")
_JOBS = ("Director of Operations", "Account Manager", "Senior Engineer", "Project Coordinator",
         "Chief Financial Officer", "Research Scientist", "Customer Service Lead", "Office Manager",
         "Head of Procurement", "Legal Counsel", "Programme Manager", "Technical Writer")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")


def _choice(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _capitalise(words: Sequence[str]) -> str:
    """Title case that leaves short function words lower-case (except the first)."""
    return " ".join(w if (i and w.lower() in _SMALL_WORDS) else w[:1].upper() + w[1:] for i, w in enumerate(words))


class _Text:
    """Draws sentences, phrases, names, dates and amounts from one rng."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.corpus = _corpus()

    def pick(self, options: Sequence):
        return _choice(self.rng, options)

    def sentence(self, max_words: int = 40) -> str:
        for _ in range(30):
            s = self.pick(self.corpus)
            if len(s.split()) <= max_words:
                return s
        return s

    def paragraph(self, lo: int, hi: int) -> str:
        return " ".join(self.sentence() for _ in range(int(self.rng.integers(lo, hi + 1))))

    def phrase(self, lo: int, hi: int) -> list[str]:
        """Up to lo..hi consecutive words of one sentence, without punctuation or dangling function words."""
        for _ in range(10):
            words = [w for w in (w.strip(".,;:!?()'\"") for w in self.sentence().split()) if w]
            n = min(len(words), int(self.rng.integers(lo, hi + 1)))
            start = int(self.rng.integers(len(words) - n + 1))
            run = words[start:start + n]
            while run and (run[-1].lower() in _STOP_WORDS or len(run[-1]) < 2):
                run.pop()
            while run and (run[0].lower() in _STOP_WORDS or len(run[0]) < 2):
                run.pop(0)
            if len(run) >= min(lo, 2) and max(map(len, run)) <= 15:  # long words are code identifiers
                return run
        return run or words[:1]

    def title(self, lo: int, hi: int) -> str:
        return _capitalise(self.phrase(lo, hi))

    def sentence_case(self, lo: int, hi: int) -> str:
        s = " ".join(self.phrase(lo, hi))
        return s[:1].upper() + s[1:]

    def name(self) -> str:
        return f"{self.pick(_FIRST_NAMES)} {self.pick(_LAST_NAMES)}"

    def company(self) -> str:
        return f"{self.pick(_LAST_NAMES)} {self.pick(_COMPANY_SUFFIXES)}"

    def address(self) -> list[str]:
        return [f"{int(self.rng.integers(1, 9999))} {self.pick(_STREETS)}",
                f"{self.pick(_CITIES)} {int(self.rng.integers(10000, 99999))}"]

    def date(self) -> str:
        y, m, d = int(self.rng.integers(2012, 2025)), int(self.rng.integers(12)), int(self.rng.integers(1, 29))
        style = int(self.rng.integers(4))
        return (f"{_MONTHS[m]} {d}, {y}", f"{d} {_MONTHS[m]} {y}", f"{y}-{m + 1:02d}-{d:02d}",
                f"{m + 1:02d}/{d:02d}/{y}")[style]

    def phone(self) -> str:
        return f"({int(self.rng.integers(200, 999))}) {int(self.rng.integers(200, 999))}-{int(self.rng.integers(10000)):04d}"

    def email(self, name: str) -> str:
        first, last = name.lower().split()[:2]
        return f"{first[0]}{last}@{self.pick(('example.com', 'mail.org', 'post.net'))}"

    def money(self, lo: float, hi: float) -> str:
        return f"${float(self.rng.uniform(lo, hi)):,.2f}"
