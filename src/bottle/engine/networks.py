"""What the engine knows about networks: the gateways a container could try to reach."""

from __future__ import annotations

import ipaddress

from python_on_whales import DockerClient

from bottle.engine.errors import docker_errors


def network_gateways() -> dict[str, list[str]]:
    """Every network's gateway addresses, by network name.

    The default bridge states only its subnet: its gateway (docker0) is the subnet's first
    address, as the engine assigns it.
    """
    client = DockerClient()
    with docker_errors("listing networks"):
        networks = client.network.list()
    found: dict[str, list[str]] = {}
    for network in networks:
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
