"""``dump_cluster``: a Cluster back to the YAML ``load_cluster`` reads."""

from __future__ import annotations

import msgspec
import yaml

from splitinfer.cluster import CLUSTER_SCHEMA, Cluster


def dump_cluster(cluster: Cluster) -> str:
    """YAML text that :func:`load_cluster` reads back to an equal cluster."""
    devices = []
    for d in cluster.devices:
        entry: dict[str, object] = {"name": d.name}
        if d.address != "local":
            entry["address"] = d.address
        if d.providers != ("CPUExecutionProvider",):
            entry["providers"] = list(d.providers)
        if d.num_threads:
            entry["num_threads"] = d.num_threads
        if d.memory_bytes is not None:
            entry["memory"] = d.memory_bytes
        if d.slowdown != 1.0:
            entry["slowdown"] = d.slowdown
        if d.power is not None:
            entry["power"] = msgspec.to_builtins(d.power)
        if d.public_key is not None:
            entry["public_key"] = d.public_key
        if d.configurations:
            entry["configurations"] = [msgspec.to_builtins(c) for c in d.configurations]
        devices.append(entry)
    links = []
    for link in cluster.links:
        entry = {"from": link.src, "to": link.dst, "symmetric": False}
        if link.measure:
            entry["measure"] = True
        if link.bandwidth_bps is not None:
            entry["bandwidth"] = link.bandwidth_bps
        if link.latency_s is not None:
            entry["latency"] = link.latency_s
        links.append(entry)
    doc: dict[str, object] = {"schema": CLUSTER_SCHEMA, "backend": cluster.backend}
    if cluster.address:
        doc["address"] = cluster.address
    doc["source"] = cluster.source
    doc["sink"] = cluster.sink if cluster.sink is not None else "none"
    if cluster.token_file:
        doc["token_file"] = cluster.token_file
    if cluster.network != "software":
        doc["network"] = cluster.network
    if cluster.curve is not None:
        doc["curve"] = msgspec.to_builtins(cluster.curve)
    if cluster.mac_tensors:
        doc["mac_tensors"] = True
    doc["devices"] = devices
    doc["links"] = links
    header = "# splitinfer cluster: bandwidth in bytes/s, latency in s (units like 20Mbit/s, 5ms work too)\n"
    return header + yaml.safe_dump(doc, sort_keys=False)
