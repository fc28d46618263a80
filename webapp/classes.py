"""The class registry of the teacher's view: classes, their students, their commands.

A teacher creates a class and gets a short join code and a secret (kept in the teacher's
signed session cookie; the registry keeps only its SHA-256). A student joins with the code;
the registry records which browser session (its token) is which student of which class --
the students see each other never, the teacher sees them only through what their server
process publishes here (``webapp.class_sync``). The teacher's actions (push a lesson, pause
all, resume all) are commands appended to the class; every server process applies the ones
for the students whose machines it runs, through the control layer.

Everything lives in the shared store (``webapp.store``): one process keeps it in memory,
several processes behind a proxy share it through Redis, so a teacher on one process sees
the students of all. Counts are bounded: classes per server, students per class, commands
kept per class, the length of names.

Keys (all expire with the class)::

    classes                     hash  code -> created (epoch seconds)
    class:CODE                  JSON  title, secret hash, created, current lesson
    class:CODE:members          hash  student id -> {name, joined}
    class:CODE:status           hash  student id -> what the student's process published
    class:CODE:cmd:N            JSON  the teacher's N-th command (N from 1, written once)
    class-member:TOKEN          JSON  {code, student}: the session's membership
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal, cast

from webapp.inputs import InputError
from webapp.store import Store

#: no 0/O, 1/I/L: a code read aloud or from a projector is typed right
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6  # 31**6 ~ 8.9e8 codes: guessing one of 50 classes takes ~1.8e7 tries
MAX_NAME = 40
MAX_TITLE = 80
MAX_COMMANDS = 10_000  # commands one class may issue in its life (each is a key)

Action = Literal["pause", "resume", "lesson", "scenario"]
ACTIONS: tuple[Action, ...] = ("pause", "resume", "lesson", "scenario")


class ClassError(InputError):
    """A refused class operation; ``status`` is its HTTP status."""

    status = 400

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ClassInfo:
    code: str
    title: str
    created: float  # epoch seconds
    lesson: str | None  # the lesson or scenario last pushed ("lesson:NAME"), if any


@dataclass(frozen=True)
class Membership:
    code: str
    student: str  # the student's id in the class (random; never the session token)


@dataclass(frozen=True)
class Command:
    seq: int
    action: Action
    target: str | None  # the lesson or scenario name for "lesson" / "scenario"
    t: float


@dataclass(frozen=True)
class StudentEntry:
    id: str
    name: str
    joined: float
    status: dict[str, Any] | None  # the last publication of the student's process


def normalize_code(text: object) -> str | None:
    """A join code as typed (any case, spaces, dashes) in its canonical form; None when it
    cannot be one."""
    if not isinstance(text, str) or len(text) > 32:
        return None
    code = re.sub(r"[\s-]", "", text).upper()
    if len(code) != CODE_LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code


def clean_name(text: object, limit: int = MAX_NAME) -> str:
    """A display name: printable, one line, at most ``limit`` characters (the DOM shows it
    with textContent; this keeps it readable and bounded)."""
    if not isinstance(text, str):
        return ""
    kept = "".join(c for c in text[:limit * 4] if unicodedata.category(c)[0] not in "CZ"
                   or c == " ")
    return " ".join(kept.split())[:limit]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ClassRegistry:
    """Typed operations on the classes in ``store``."""

    def __init__(self, store: Store, *, max_classes: int, max_students: int,
                 ttl: float) -> None:
        self.store = store
        self.max_classes = max_classes
        self.max_students = max_students
        self.ttl = ttl

    # ------------------------------------------------------------------ classes

    def create(self, title: str = "") -> tuple[ClassInfo, str]:
        """A new class and its teacher's secret; ``ClassError`` 503 when the server already
        holds ``max_classes``."""
        self.purge_expired()
        if len(self.store.hash_all("classes")) >= self.max_classes:
            raise ClassError(f"this server already holds {self.max_classes} classes (its "
                             "limit); end one first", 503)
        secret = secrets.token_urlsafe(24)
        now = time.time()
        title = clean_name(title, MAX_TITLE) or "class"
        for _ in range(20):
            code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
            record = {"title": title, "created": now, "secret": _digest(secret),
                      "lesson": None}
            if self.store.set(self._key(code), json.dumps(record), ttl=self.ttl,
                              only_new=True):
                self.store.hash_set("classes", code, str(now))
                return ClassInfo(code, title, now, None), secret
        raise ClassError("no free class code found; try again", 503)  # pragma: no cover

    def get(self, code: str) -> ClassInfo | None:
        record = self._record(code)
        if record is None:
            return None
        return ClassInfo(code, str(record.get("title", "class")),
                         float(record.get("created", 0.0)),
                         record.get("lesson") if isinstance(record.get("lesson"), str)
                         else None)

    def is_teacher(self, code: str, secret: object) -> bool:
        """True when ``secret`` is the teacher's (compared in constant time)."""
        record = self._record(code)
        if record is None or not isinstance(secret, str):
            return False
        return hmac.compare_digest(_digest(secret), str(record.get("secret", "")))

    def end(self, code: str) -> None:
        """The class and everything it holds go (its students keep their machines)."""
        for student in self.store.hash_all(self._key(code, "members")):
            self.store.hash_delete(self._key(code, "members"), student)
        self._drop(code)

    def purge_expired(self) -> None:
        """Classes whose record expired leave the index, with their hashes."""
        for code in self.store.hash_all("classes"):
            if self.store.get(self._key(code)) is None:
                self._drop(code)

    def _drop(self, code: str) -> None:
        self.store.delete(self._key(code))
        self.store.delete(self._key(code, "members"))
        self.store.delete(self._key(code, "status"))
        self.store.hash_delete("classes", code)

    # ------------------------------------------------------------------ students

    def join(self, code: str, token: str, name: str) -> Membership:
        """Make session ``token`` a student of ``code`` (again: the same id). ``ClassError``
        404 for no such class, 429 when it is full."""
        info = self.get(code)
        if info is None:
            raise ClassError("no class has this code; check it with your teacher", 404)
        current = self.membership(token)
        members = self.store.hash_all(self._key(code, "members"))
        if current is not None and current.code == code and current.student in members:
            student = current.student
        else:
            if current is not None:
                self.leave(token)
            if len(members) >= self.max_students:
                raise ClassError(f"this class is full ({self.max_students} students)", 429)
            student = secrets.token_urlsafe(6)
        name = clean_name(name) or f"student {len(members) + 1}"
        self.store.hash_set(self._key(code, "members"), student,
                            json.dumps({"name": name, "joined": time.time()}))
        membership = Membership(code, student)
        self.store.set(self._member_key(token), json.dumps(
            {"code": code, "student": student}), ttl=self.ttl)
        return membership

    def membership(self, token: str) -> Membership | None:
        raw = self.store.get(self._member_key(token))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            membership = Membership(str(data["code"]), str(data["student"]))
        except (ValueError, KeyError, TypeError):
            return None
        if self.store.get(self._key(membership.code)) is None:
            return None  # the class ended
        return membership

    def leave(self, token: str) -> None:
        membership = self.membership(token)
        self.store.delete(self._member_key(token))
        if membership is not None:
            self.store.hash_delete(self._key(membership.code, "members"), membership.student)
            self.store.hash_delete(self._key(membership.code, "status"), membership.student)

    def students(self, code: str) -> list[StudentEntry]:
        """The class's students in the order they joined, each with its last status."""
        members = self.store.hash_all(self._key(code, "members"))
        status = self.store.hash_all(self._key(code, "status"))
        out = []
        for student, raw in members.items():
            try:
                data = json.loads(raw)
                state = json.loads(status[student]) if student in status else None
            except ValueError:
                continue
            out.append(StudentEntry(student, str(data.get("name", "")),
                                    float(data.get("joined", 0.0)),
                                    state if isinstance(state, dict) else None))
        return sorted(out, key=lambda s: (s.joined, s.id))

    def student(self, code: str, student: str) -> StudentEntry | None:
        return next((s for s in self.students(code) if s.id == student), None)

    def publish(self, membership: Membership, status: dict[str, Any]) -> None:
        """What a student's process says about the student's machine (``class_sync``)."""
        if membership.student not in self.store.hash_all(self._key(membership.code,
                                                                   "members")):
            return  # left meanwhile: do not bring them back
        self.store.hash_set(self._key(membership.code, "status"), membership.student,
                            json.dumps({**status, "t": time.time()}))

    # ------------------------------------------------------------------ commands

    def command(self, code: str, action: Action, target: str | None = None) -> Command:
        """Append the teacher's command; every process applies it to its students."""
        if action not in ACTIONS:
            raise ClassError(f"unknown class action '{action}'")
        record = self._record(code)
        if record is None:
            raise ClassError("no class has this code", 404)
        seq = self.last_command(code) + 1
        now = time.time()
        while seq <= MAX_COMMANDS:
            body = json.dumps({"action": action, "target": target, "t": now})
            if self.store.set(self._key(code, f"cmd:{seq}"), body, ttl=self.ttl,
                              only_new=True):
                break
            seq += 1  # another request took this number meanwhile
        else:
            raise ClassError(f"this class has issued {MAX_COMMANDS} commands (its limit)",
                             429)
        if action in ("lesson", "scenario"):
            record["lesson"] = f"{action}:{target}"
            self.store.set(self._key(code), json.dumps(record), ttl=self._ttl_left(record))
        return Command(seq, action, target, now)

    def last_command(self, code: str) -> int:
        """The number of the class's latest command (0: none). Commands are numbered from
        1 without gaps, so this is a binary search over the ones written."""
        low, high = 0, 1
        while high <= MAX_COMMANDS and self.store.get(self._key(code, f"cmd:{high}")):
            low, high = high, high * 2
        high = min(high, MAX_COMMANDS + 1)
        while high - low > 1:  # cmd:low exists (or low == 0), cmd:high does not
            mid = (low + high) // 2
            if self.store.get(self._key(code, f"cmd:{mid}")):
                low = mid
            else:
                high = mid
        return low

    def commands_after(self, code: str, seq: int, limit: int = 20) -> list[Command]:
        out: list[Command] = []
        while len(out) < limit:
            raw = self.store.get(self._key(code, f"cmd:{seq + len(out) + 1}"))
            if raw is None:
                break
            data = json.loads(raw)
            out.append(Command(seq + len(out) + 1, cast(Action, data["action"]),
                               data.get("target"), float(data.get("t", 0.0))))
        return out

    # ------------------------------------------------------------------ keys

    def _record(self, code: str) -> dict[str, Any] | None:
        raw = self.store.get(self._key(code))
        if raw is None:
            return None
        try:
            record = json.loads(raw)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def _ttl_left(self, record: dict[str, Any]) -> float:
        return max(1.0, float(record.get("created", 0.0)) + self.ttl - time.time())

    @staticmethod
    def _key(code: str, part: str | None = None) -> str:
        return f"class:{code}" + (f":{part}" if part else "")

    @staticmethod
    def _member_key(token: str) -> str:
        return "class-member:" + token
