"""Where things live: inside the containers, and in an instance's state directory.

Host side and container side both import this module, so a path is spelled once.
"""

from __future__ import annotations

from pathlib import PurePosixPath

#: Mount points inside containers.
RUN = PurePosixPath("/run/bottle")
LIVE_CONFIG = RUN / "live-config"  # + /<sidecar>/, read-only, bind-mounted directory
CA_PUBLIC = RUN / "ca"  # the bottle CA certificate (ca.pem), read-only in the agent
CA_PRIVATE = RUN / "ca-private"  # egress only: mitmproxy's confdir with the CA key
LOGS = RUN / "logs"  # sidecars append their JSON-line logs here
STATUS = RUN / "status"  # sidecars publish their status files here (<sidecar>.json)
PROPOSALS = RUN / "proposals"  # supervise: one JSON file per proposal
AGENT_CONFIG = RUN / "agent"  # agent: system prompt, MCP config, git config
TRANSCRIPT = RUN / "transcript"  # agent: the conversation lands here
WORKSPACE = PurePosixPath("/workspace")
HOST_CA = PurePosixPath("/etc/bottle/host-ca.pem")  # baked into the sidecar image

#: Ports on the internal network.
EGRESS_PORT = 8080
SUPERVISE_PORT = 8765
GIT_GATE_PORT = 9418

#: File names inside state/<slug>/ (and in the mounted directories above).
METADATA = "metadata.json"
PLAN_FILE = "plan.json"
COMPOSE_FILE = "docker-compose.yml"
COMPOSE_LOG = "compose.log"
#: What the operator ran (``bottle exec``, ``bottle run``) and how it ended: in the state
#: dir's root, which only the host writes, never in transcript/ (the agent writes that).
EXEC_LOG = "exec.log"
RUN_LOG = "run.log"
ROUTES_FILE = "routes.yaml"  # in live-config/egress/
#: In proposals/: the agent image in force, rewritten by the host when a capability swaps
#: it, so supervise checks and names the image the agent runs now (not its start's).
AGENT_IMAGE_FILE = "agent-image"
EGRESS_LOG = "egress.jsonl"  # in logs/
CA_CERT = "ca.pem"  # in ca/
