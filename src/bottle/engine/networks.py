"""What the engine knows about networks: the gateways a container could try to reach."""

from __future__ import annotations

import ipaddress

from bottle.engine.errors import docker_errors


def network_gateways() -> dict[str, list[str]]:
    """Every network's gateway addresses, by network name.

    Networks come and go while we look (other instances start and stop): one that is gone
    by the time it is inspected is skipped. The default bridge states only its subnet: its
    gateway (docker0) is the subnet's first address, as the engine assigns it.
    """
    # Imported here: every start lists subnets, and this module must not cost it a second.
    from python_on_whales import DockerClient
    from python_on_whales.exceptions import NoSuchNetwork
    from python_on_whales.utils import run

    client = DockerClient()
    with docker_errors("listing networks"):
        listing = run([*client.client_config.docker_cmd, "network", "ls", "-q"])
    found: dict[str, list[str]] = {}
    ids: list[str] = listing.split() if isinstance(listing, str) else []
    for network_id in ids:
        with docker_errors("inspecting a network"):
            try:
                network = client.network.inspect(network_id)
            except NoSuchNetwork:
                continue
        configs = (network.ipam.config if network.ipam else None) or []
        gateways = []
        for config in configs:
            if config.get("Gateway"):
                gateways.append(str(config["Gateway"]))
            elif config.get("Subnet"):
                gateways.append(str(next(ipaddress.ip_network(config["Subnet"]).hosts())))
        if gateways and network.name:
            found[network.name] = gateways
    return found


def subnets_in_use() -> list[str]:
    """The subnet of every network the engine has, in two docker calls (no python-on-whales).

    A network removed between the listing and the inspect is skipped: docker then exits 1
    naming it, and prints the others. Other instances start and stop all the time.
    """
    import subprocess

    from bottle.engine.errors import docker_cli, failure

    docker = docker_cli()
    listing = subprocess.run(
        [docker, "network", "ls", "-q"], capture_output=True, text=True, check=False
    )
    if listing.returncode != 0:
        raise failure(listing.args, listing.stderr, listing.returncode, "listing networks")
    ids = listing.stdout.split()
    if not ids:
        return []
    argv = [docker, "network", "inspect", "--format", _SUBNETS_FORMAT, *ids]
    inspect = subprocess.run(argv, capture_output=True, text=True, check=False)
    if inspect.returncode != 0 and not all(map(_gone, inspect.stderr.strip().splitlines())):
        raise failure(argv, inspect.stderr, inspect.returncode, "inspecting networks")
    return inspect.stdout.split()


_SUBNETS_FORMAT = "{{range .IPAM.Config}}{{.Subnet}} {{end}}"


def _gone(line: str) -> bool:
    """Docker's word for a network removed meanwhile (it has used both)."""
    return "No such network" in line or (line.startswith("Error") and line.endswith("not found"))
