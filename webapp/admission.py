"""Who gets a machine: a browser session with its cookie, within the server's limits.

Every way to a new machine (the first socket of a session, the first JSON API call, "new
machine", loading a state file, starting a lesson or a shared scenario) passes here:

* the request must carry the session cookie (``GET /`` or ``GET /api/csrf-token`` sets it):
  a cookieless request would otherwise boot a machine each time and could evict an idle
  student's machine to make room;
* the client's rate limit for new machines (``VMEMLAB_RATELIMIT_MACHINES``);
* the server's memory budget (``VMEMLAB_MAX_RESIDENT``): no new machine once the guests
  together hold that much host memory.
"""

from __future__ import annotations

from webapp import ext, ratelimits
from webapp.pages import session_token
from webapp.sessions import NO_COOKIE, MachineSession, NoCookieError


def token() -> str:
    """This request's session token; ``NoCookieError`` when it came without the cookie."""
    value = session_token(create=False)
    if value is None:
        raise NoCookieError(NO_COOKIE)
    return value


def admit_new_machine(own: MachineSession | None = None) -> None:
    """Rate limit and memory budget for one more machine (``own``'s is replaced)."""
    ratelimits.hit("VMEMLAB_RATELIMIT_MACHINES")
    ext.sessions().check_budget(own=own, replacing=own is not None)


def session() -> MachineSession:
    """This cookie's session, booting its machine on first use (admitted first)."""
    tok = token()
    mgr = ext.sessions()
    sess = mgr.get(tok)
    if sess is None:
        admit_new_machine()
    return mgr.session(tok)


def replacing(tok: str) -> MachineSession | None:
    """Admit a machine that replaces ``tok``'s (if any); the current session, if one."""
    sess = ext.sessions().get(tok)
    admit_new_machine(sess)
    return sess
