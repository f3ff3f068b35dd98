"""The fleet client: many agents from one place (`dtma fleet status|apply|rm`).

`inventory` reads fleet.yaml (or, later, a controller's agent list: `AgentSource`), `status`
gathers, `rollout` runs a gated rollout across hosts, `remove` deletes everywhere. All fan out
with a bound (`fanout`) and turn one agent's failure into a result, never a crash.
"""

from dtma.fleet.fanout import Connection, fan_out
from dtma.fleet.inventory import (
    AgentSource,
    FleetAgent,
    FleetFile,
    FleetFileError,
    load_fleet,
    parse_fleet,
    parse_selectors,
    select,
)
from dtma.fleet.plan import Wave, plan_waves
from dtma.fleet.remove import RemoveResult, fleet_remove
from dtma.fleet.rollout import AgentResult, FleetRollout, Progress, RolloutOptions, RolloutReport
from dtma.fleet.status import AgentStatus, fleet_status

__all__ = [
    "AgentResult",
    "AgentSource",
    "AgentStatus",
    "Connection",
    "FleetAgent",
    "FleetFile",
    "FleetFileError",
    "FleetRollout",
    "Progress",
    "RemoveResult",
    "RolloutOptions",
    "RolloutReport",
    "Wave",
    "fan_out",
    "fleet_remove",
    "fleet_status",
    "load_fleet",
    "parse_fleet",
    "parse_selectors",
    "plan_waves",
    "select",
]
