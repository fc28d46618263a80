"""Scripted scenarios: a YAML format (``scenario.schema.json``), a loader that checks a whole
file before anything runs, a player (``vmemlab play``) and NDJSON recordings that a viewer can
seek in. See docs/scenarios.md.
"""

from scenarios.loader import Scenario, ScenarioError, Step, load_scenario, parse_scenario
from scenarios.recording import Recorder, Recording
from scenarios.runner import Player, StepFailed, StepReport

__all__ = ["Player", "Recorder", "Recording", "Scenario", "ScenarioError", "Step", "StepFailed",
           "StepReport", "load_scenario", "parse_scenario"]
