"""The block states the grids draw: the one table of codes, names, views and looks.

Every device block is shown in one state per *view*: ``guest`` (what the guest's allocator
thinks), ``host`` (what the host really backs, from pagemap residency), ``device`` (only
the device's plugged bitmap: all a recording keeps) and ``compare`` (the comparison lab's
cells, for every mechanism it compares). The server computes the codes
(``webapp/view_model.py``); a page gets this table once, as a JSON data element rendered by
its template (``templates/block_states.html``), and ``static/block-states.js`` hands it to the
grid, the legend and the live and replay code. No JavaScript file defines a code, a label or
a colour of its own (``tests/webapp/test_block_states.py`` checks both).

Colours are the Okabe-Ito palette (colour-blind safe) and each state has a pattern as well.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum
from functools import cache
from typing import Any


class BlockState(IntEnum):
    """One byte per block in the codes the server sends (``view_model.guest_codes`` etc.)."""

    UNPLUGGED = 0  # reads give zeros (the host's shared zero page)
    PLUGGED_FREE = 1  # plugged, the guest holds nothing in it
    PLUGGED_MOVABLE = 2  # holds movable data (can be migrated away, so unpluggable)
    PLUGGED_UNMOVABLE = 3  # holds unmovable (pinned) data
    IN_FLIGHT = 4  # requested but not yet answered / being emptied by the guest
    OUTSIDE_USABLE = 5  # beyond usable_region_size: the guest may not plug it
    HOST_PLUGGED_EMPTY = 6  # plugged, no host memory behind it yet
    HOST_PARTLY_RESIDENT = 7  # plugged, some pages resident
    HOST_RESIDENT = 8  # plugged, every page resident
    HOST_UNPLUGGED_RESIDENT = 9  # unplugged, yet the host backs it (a rogue write did that)
    PLUGGED = 10  # plugged, per the device's bitmap (nothing more is known)
    # the comparison lab (webapp/compare_view.py): one cell per block or chunk of any
    # mechanism -- virtio-mem blocks, a DIMM slot's blocks, a balloon model's RAM
    LAB_EMPTY = 11  # an empty DIMM slot
    LAB_MOVABLE = 12  # plugged, onlined to ZONE_MOVABLE
    LAB_NORMAL = 13  # plugged, onlined to ZONE_NORMAL
    LAB_RETURNED = 14  # given back to the host
    LAB_PARTLY = 15  # partly given back
    LAB_PINNED = 16  # holds pages nothing can migrate
    LAB_OFFLINE = 17  # added, offline
    LAB_IN_USE = 18  # RAM the guest has


@dataclass(frozen=True)
class Style:
    """How a grid draws a state: a fill and at most a few pattern marks (colours)."""

    fill: str
    outline: str | None = None  # a frame inside the cell
    half: str | None = None  # the lower half in this colour
    dot: str | None = None  # a dot in the middle
    ring: str | None = None  # a small square in the middle
    hatch: str | None = None  # a frame and one diagonal
    cross: str | None = None  # both diagonals

    def marks(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class StateInfo:
    name: str  #: short: the hover answer (``block_info``) and the JSON API
    label: str  #: the legend's line and the tooltip's first line
    plugged: bool  #: counts as plugged (a canvas's ``data-plugged``)
    style: Style


BLUE, SKY_BLUE, VERMILLION = "#0072B2", "#56B4E9", "#D55E00"

STATES: dict[BlockState, StateInfo] = {
    BlockState.UNPLUGGED: StateInfo("unplugged", "unplugged", False, Style("#e4e4e4")),
    BlockState.PLUGGED_FREE: StateInfo("plugged, free", "plugged, free", True,
                                       Style(SKY_BLUE)),
    BlockState.PLUGGED_MOVABLE: StateInfo("plugged, movable data", "plugged, movable data",
                                          True, Style(BLUE)),
    BlockState.PLUGGED_UNMOVABLE: StateInfo(
        "plugged, unmovable data", "plugged, unmovable data", True,
        Style(VERMILLION, dot="#ffffff")),
    BlockState.IN_FLIGHT: StateInfo(
        "in flight", "in flight (requested, not yet answered)", False,
        Style("#F0E442", ring="#000000")),
    BlockState.OUTSIDE_USABLE: StateInfo(
        "outside the usable region", "outside the usable region", False,
        Style("#ffffff", hatch="#9a9a9a")),
    BlockState.HOST_PLUGGED_EMPTY: StateInfo(
        "plugged, no host memory yet", "plugged, no host memory yet", True,
        Style("#d5ebf7", outline=BLUE)),
    BlockState.HOST_PARTLY_RESIDENT: StateInfo(
        "plugged, partly resident", "plugged, partly resident", True,
        Style(SKY_BLUE, half=BLUE)),
    BlockState.HOST_RESIDENT: StateInfo(
        "plugged, resident", "plugged, resident in host RAM", True, Style(BLUE)),
    BlockState.HOST_UNPLUGGED_RESIDENT: StateInfo(
        "unplugged but resident",
        "unplugged but resident (a rogue write: the host backs it again)", False,
        Style("#000000", cross=VERMILLION)),
    BlockState.PLUGGED: StateInfo("plugged", "plugged", True, Style(BLUE)),
    BlockState.LAB_EMPTY: StateInfo("empty slot", "empty slot", False,
                                    Style("#ffffff", outline="#9a9a9a")),
    BlockState.LAB_MOVABLE: StateInfo("movable", "plugged, ZONE_MOVABLE", True, Style(BLUE)),
    BlockState.LAB_NORMAL: StateInfo("normal", "plugged, ZONE_NORMAL", True, Style(SKY_BLUE)),
    BlockState.LAB_RETURNED: StateInfo("returned", "given back to the host", False,
                                       Style("#e4e4e4", cross="#9a9a9a")),
    BlockState.LAB_PARTLY: StateInfo("partly", "partly given back", True, Style("#F0E442")),
    BlockState.LAB_PINNED: StateInfo("pinned", "holds pages nothing can migrate", True,
                                     Style(VERMILLION, dot="#ffffff")),
    BlockState.LAB_OFFLINE: StateInfo("offline", "added, offline", True,
                                      Style("#d5ebf7", outline=BLUE)),
    BlockState.LAB_IN_USE: StateInfo("in use", "RAM the guest has", True, Style("#E69F00")),
}

#: the states each view can show, in the legend's order
VIEWS: dict[str, tuple[BlockState, ...]] = {
    "guest": (BlockState.UNPLUGGED, BlockState.PLUGGED_FREE, BlockState.PLUGGED_MOVABLE,
              BlockState.PLUGGED_UNMOVABLE, BlockState.IN_FLIGHT, BlockState.OUTSIDE_USABLE),
    "host": (BlockState.UNPLUGGED, BlockState.HOST_PLUGGED_EMPTY,
             BlockState.HOST_PARTLY_RESIDENT, BlockState.HOST_RESIDENT,
             BlockState.OUTSIDE_USABLE, BlockState.HOST_UNPLUGGED_RESIDENT),
    "device": (BlockState.UNPLUGGED, BlockState.PLUGGED, BlockState.OUTSIDE_USABLE),
    # a recording's keyframes keep what the guest held per block (scenarios/recording.py)
    "replay": (BlockState.UNPLUGGED, BlockState.PLUGGED_FREE, BlockState.PLUGGED_MOVABLE,
               BlockState.PLUGGED_UNMOVABLE, BlockState.OUTSIDE_USABLE),
    "compare": (BlockState.LAB_MOVABLE, BlockState.LAB_NORMAL, BlockState.LAB_PINNED,
                BlockState.LAB_OFFLINE, BlockState.LAB_IN_USE, BlockState.LAB_PARTLY,
                BlockState.LAB_RETURNED, BlockState.LAB_EMPTY),
}

PLUGGED_CODES = frozenset(state for state, info in STATES.items() if info.plugged)


def name(code: int) -> str:
    return STATES[BlockState(code)].name


@cache
def page_data() -> dict[str, Any]:
    """The table as a page receives it (JSON): the states, the views' code lists (read-only)."""
    return {
        "states": [
            {"code": int(state), "key": state.name, "name": info.name, "label": info.label,
             "plugged": info.plugged, "style": info.style.marks()}
            for state, info in STATES.items()
        ],
        "views": {view: [int(s) for s in states] for view, states in VIEWS.items()},
    }
