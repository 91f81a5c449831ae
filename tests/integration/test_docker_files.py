"""docker/: the compose cluster and the image, checked without a Docker engine.

No engine runs on the development machines, so nothing here builds an image or starts a
container. Instead: compose.yaml is parsed and cross-checked against the rendered configs
(every address a config names is a service's fixed address, and the service listening there),
the configs against the local cluster that hubd.cluster.layout plans (same routes, domains and
settings), the rendered files against a fresh render, the Dockerfile's instructions, and the
rendered configs and the healthcheck script are run for real, moved onto loopback.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import shlex
import smtplib
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dnslib import QTYPE, RR

from hubd.cluster.layout import Role, node_settings, plan_cluster, zone_text
from hubd.config import Config, HostPort, load_config, parse_config
from hubd.testing import NodeProcess, free_loopback_address, maildir_messages, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
CONFIG_DIR = DOCKER / "config"
NODES = ("hub-1", "hub-2", "hub-3", "mbx-1", "outside-1")
HUBS = ("hub-1", "hub-2", "hub-3")
SERVICES = (*NODES, "dns")
CONTAINER_CONFIG = "/etc/hubd/hubd.toml"
CONTAINER_ZONE = "/etc/hubd/zone.txt"
CONTAINER_DATA = "/var/lib/hubd"
HEALTHCHECK = DOCKER / "healthcheck.py"


# --- reading compose.yaml -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"][name]
    return found


def network_name(compose: dict[str, Any]) -> str:
    (name,) = compose["networks"]
    assert isinstance(name, str)
    return name


def subnet(compose: dict[str, Any]) -> ipaddress.IPv4Network:
    (pool,) = compose["networks"][network_name(compose)]["ipam"]["config"]
    return ipaddress.IPv4Network(pool["subnet"])


def service_ip(compose: dict[str, Any], name: str) -> str:
    address: str = service(compose, name)["networks"][network_name(compose)]["ipv4_address"]
    return address


def service_names(compose: dict[str, Any]) -> dict[str, str]:
    """Each service's fixed address -> its name."""
    return {service_ip(compose, name): name for name in compose["services"]}


def mounts(svc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Short-syntax volumes: container path -> (source, mode)."""
    out = {}
    for entry in svc.get("volumes", []):
        source, target, *mode = entry.split(":")
        out[target] = (source, mode[0] if mode else "rw")
    return out


def dns_command(compose: dict[str, Any]) -> dict[str, str]:
    """The dns service's options: {"--listen": ..., "--zone": ...}."""
    command = service(compose, "dns")["command"]
    if isinstance(command, str):
        command = shlex.split(command)
    assert command[0] == "dns-server", command
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert set(options) == {"--listen", "--zone"}, command
    return options


def node_config(name: str) -> Config:
    return load_config(CONFIG_DIR / f"{name}.toml")


def zone_records(text: str, names: dict[str, str]) -> list[tuple[str, str, str]]:
    """(name, type, data) of every record, with A addresses replaced by node names."""
    records = []
    for rr in RR.fromZone(text):
        data = str(rr.rdata)
        if QTYPE[rr.rtype] == "A":
            data = names.get(data, f"unknown address {data}")
        records.append((str(rr.rname), QTYPE[rr.rtype], data))
    return records


# --- the services and the network -----------------------------------------------------------


def test_six_services_on_one_bridge_network_with_fixed_addresses(compose: dict[str, Any]) -> None:
    assert sorted(compose["services"]) == sorted(SERVICES)
    network = network_name(compose)
    assert compose["networks"][network]["driver"] == "bridge"
    pool = subnet(compose)
    (config,) = compose["networks"][network]["ipam"]["config"]
    gateway = ipaddress.IPv4Address(config["gateway"])
    assert gateway in pool
    addresses = [ipaddress.IPv4Address(service_ip(compose, name)) for name in SERVICES]
    assert len(set(addresses)) == len(SERVICES), "two services share an address"
    for name, address in zip(SERVICES, addresses, strict=True):
        assert list(service(compose, name)["networks"]) == [network], name
        assert address in pool, f"{name}: {address} outside {pool}"
        assert address not in (gateway, pool.network_address, pool.broadcast_address), name


def test_each_node_mounts_its_own_config_read_only_and_a_named_volume(
    compose: dict[str, Any],
) -> None:
    volumes = compose["volumes"]
    seen_volumes = set()
    for name in NODES:
        svc = service(compose, name)
        assert "command" not in svc, f"{name} runs the image's CMD (hubd serve -c ...)"
        mounted = mounts(svc)
        assert mounted[CONTAINER_CONFIG] == (f"./config/{name}.toml", "ro"), name
        data_volume, mode = mounted[CONTAINER_DATA]
        assert mode == "rw"
        assert data_volume in volumes, f"{name}: {data_volume} is no named volume"
        seen_volumes.add(data_volume)
        config = node_config(name)  # exists and is a valid hubd.toml
        assert config.node.name == name
        assert str(config.node.data_dir) == CONTAINER_DATA
        assert config.mailbox_dir == Path(CONTAINER_DATA) / "mailboxes"
    assert len(seen_volumes) == len(NODES), "two nodes share a data volume"
    assert set(volumes) == seen_volumes

    dns = service(compose, "dns")
    assert mounts(dns) == {CONTAINER_ZONE: ("./config/zone.txt", "ro")}
    assert dns_command(compose)["--zone"] == CONTAINER_ZONE
    assert (CONFIG_DIR / "zone.txt").is_file()


def test_addresses_in_the_configs_are_the_services_fixed_addresses(
    compose: dict[str, Any],
) -> None:
    names = service_names(compose)
    pool = subnet(compose)
    dns_listen = HostPort.parse(dns_command(compose)["--listen"])
    assert dns_listen.host == service_ip(compose, "dns"), "the DNS server binds its own address"
    listening = {name: {str(a) for a in node_config(name).smtp.listen} for name in NODES}

    for name in NODES:
        config = node_config(name)
        assert {a.host for a in config.smtp.listen} == {service_ip(compose, name)}, name
        assert config.dns.nameservers == [dns_listen], name
        assert config.smtp.trusted_networks == [pool], name
        assert config.shadow.peers in (None, [pool]), name
        for route in config.routes:
            for hop in route.next_hops:
                target = names.get(hop.host)
                assert target in NODES, f"{name}: next hop {hop} is no node's address"
                assert str(hop) in listening[target], f"{name}: {target} does not listen on {hop}"

    # MX: the zone names the services' addresses, and the MX hosts listen on mx_port.
    records = zone_records((CONFIG_DIR / "zone.txt").read_text(encoding="utf-8"), names)
    for name in SERVICES:
        assert (f"{name}.hubd.test.", "A", name) in records
    assert ("mx1.example.net.", "A", "outside-1") in records
    assert ("example.net.", "MX", "10 mx1.example.net.") in records
    assert ("corp.test.", "MX", "10 mbx-1.hubd.test.") in records
    assert not [r for r in records if r[2].startswith("unknown address")], records
    for name in ("outside-1", "mbx-1"):
        mx_port = node_config("hub-1").delivery.mx_port
        assert f"{service_ip(compose, name)}:{mx_port}" in listening[name]


def abstract(config: Config, names: dict[str, str]) -> dict[str, Any]:
    """A config with addresses as <node>:<port>, and what the container changes blanked."""

    def named(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: named(item) for key, item in value.items()}
        if isinstance(value, list):
            return [named(item) for item in value]
        if isinstance(value, str):
            try:
                address = HostPort.parse(value)
            except ValueError:
                return value
            if address.host in names:
                return f"{names[address.host]}:{address.port}"
        return value

    data: dict[str, Any] = named(config.model_dump(mode="json"))
    data["node"]["data_dir"] = "<data dir>"
    # The containers have no certificates: no [tls], the submission port relays (see
    # docker/render_configs.py); the local cluster's nodes have both.
    data.pop("tls", None)
    data["delivery"]["tls"] = data["delivery"]["tls_ca"] = "<no certificates in the image>"
    submission = data.pop("submission")
    data["smtp"]["listen"] = data["smtp"]["listen"] + submission["listen"]
    data["smtp"]["trusted_networks"] = "<the cluster's network>"
    if data["shadow"]["peers"] is not None:
        data["shadow"]["peers"] = "<the cluster's network>"
    return data


def test_same_topology_as_the_local_cluster(compose: dict[str, Any], tmp_path: Path) -> None:
    """Routes, local domains, zone and every other setting as `hubd cluster up` (3 hubs)."""
    layout = plan_cluster(tmp_path, 3, "127.0.0")
    local_names = {plan.host: plan.name for plan in layout.nodes}
    docker_names = service_names(compose)
    assert sorted(plan.name for plan in layout.nodes) == sorted(SERVICES)
    for plan in layout.nodes:
        if plan.role is Role.DNS:
            continue
        local = abstract(parse_config(node_settings(layout, plan)), local_names)
        docker = abstract(node_config(plan.name), docker_names)
        assert docker["local_domains"] == local["local_domains"], plan.name
        assert docker["routes"] == local["routes"], plan.name
        assert docker == local, plan.name
    zone = (CONFIG_DIR / "zone.txt").read_text(encoding="utf-8")
    assert zone_records(zone, docker_names) == zone_records(zone_text(layout), local_names)
    # The hubs' routes, spelled out: mailstore first, then the hubs after them, no cycle.
    hops = {name: [str(h) for r in node_config(name).routes for h in r.next_hops] for name in HUBS}

    def relay(name: str) -> str:
        return f"{service_ip(compose, name)}:2525"

    assert hops == {
        "hub-1": [relay("mbx-1"), relay("hub-2"), relay("hub-3")],
        "hub-2": [relay("mbx-1"), relay("hub-3")],
        "hub-3": [relay("mbx-1")],
    }


def test_rendered_files_are_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "config"
    result = subprocess.run(
        [sys.executable, str(DOCKER / "render_configs.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh = {path.name: path.read_bytes() for path in sorted(out.iterdir())}
    committed = {path.name: path.read_bytes() for path in sorted(CONFIG_DIR.iterdir())}
    assert sorted(committed) == sorted(fresh)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"docker/config/ is stale ({stale}): run docker/render_configs.py"


def test_hubs_publish_relay_and_submission_on_host_loopback_only(
    compose: dict[str, Any],
) -> None:
    host_ports: list[int] = []
    for name in SERVICES:
        ports = service(compose, name).get("ports", [])
        if name not in HUBS:
            assert not ports, f"{name} publishes ports"
            continue
        published = {}
        for entry in ports:
            parts = str(entry).split(":")
            assert len(parts) == 3, f"{name}: {entry} names no host address (all of them)"
            host_ip, host_port, container_port = parts
            assert host_ip == "127.0.0.1", f"{name}: {entry} is not on the host's loopback"
            published[int(container_port)] = int(host_port)
        listen_ports = {a.port for a in node_config(name).smtp.listen}
        assert set(published) == listen_ports == {2525, 2587}, name
        host_ports += published.values()
    assert len(set(host_ports)) == len(host_ports), "two services publish the same host port"


def test_healthchecks_ask_the_address_each_service_listens_on(compose: dict[str, Any]) -> None:
    for name in NODES:
        environment = service(compose, name)["environment"]
        assert environment.get("HUBD_HEALTHCHECK_PROTOCOL", "smtp") == "smtp"
        assert environment["HUBD_HEALTHCHECK_ADDRESS"] == str(node_config(name).smtp.listen[0])
    environment = service(compose, "dns")["environment"]
    assert environment["HUBD_HEALTHCHECK_PROTOCOL"] == "dns"
    assert environment["HUBD_HEALTHCHECK_ADDRESS"] == dns_command(compose)["--listen"]


def test_services_build_the_image_of_docker_dockerfile(compose: dict[str, Any]) -> None:
    for name in SERVICES:
        build = service(compose, name)["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (
            DOCKER / "Dockerfile"
        )
        assert (DOCKER / build["context"]).resolve() == ROOT


# --- the Dockerfile -------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DOCKER / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation"
    return instructions


def arguments(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile() if kw == keyword]


def test_dockerfile_slim_non_root_with_healthcheck() -> None:
    assert arguments("FROM") == ["python:3.11-slim"]
    (user,) = arguments("USER")
    uid = user.split(":")[0]
    assert uid not in ("root", "0", ""), "the image runs as root"
    creates = " ".join(arguments("RUN"))
    assert f"--uid {uid}" in creates, "USER is the user the image creates"
    keywords = [kw for kw, _ in dockerfile()]
    assert "RUN" not in keywords[keywords.index("USER") :], "a RUN after USER runs as the user"
    (healthcheck,) = arguments("HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert json.loads(command) == ["python", "/usr/local/lib/hubd/healthcheck.py"], command
    assert "--interval=" in options
    assert "--timeout=" in options
    assert arguments("EXPOSE") == ["2525 2587"]
    assert [json.loads(a) for a in arguments("ENTRYPOINT")] == [["hubd"]]
    assert [json.loads(a) for a in arguments("CMD")] == [["serve", "-c", CONTAINER_CONFIG]]
    assert any("pip install /usr/src/hubd" in run for run in arguments("RUN"))
    assert CONTAINER_DATA in " ".join(arguments("VOLUME") + arguments("WORKDIR"))


def test_build_context_holds_what_the_image_needs() -> None:
    """Every COPY source and what `pip install .` reads is let through the dockerignore."""
    lines = (DOCKER / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert "*" in lines, "the context is an allowlist"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    for copy in arguments("COPY"):
        sources = [word for word in copy.split()[:-1] if not word.startswith("--")]
        assert "--from" not in copy
        needed |= set(sources)
    for path in needed:
        assert (ROOT / path).exists(), path
        assert path in allowed, f"{path} is not in the build context"


def test_default_config_of_the_image() -> None:
    """The image's own hubd.toml is valid and listens where the healthcheck asks."""
    config = load_config(DOCKER / "hubd.toml")
    assert str(config.node.data_dir) == CONTAINER_DATA
    assert HostPort.parse("0.0.0.0:2525") in config.smtp.listen


# --- the rendered configs and the healthcheck, run on loopback ------------------------------


def loopback_host(ports: tuple[int, ...] = (2525, 2587, 5300)) -> str:
    """A 127.0.x.y address on which the containers' ports are free."""
    for _ in range(50):
        host, _port = free_loopback_address()
        free = True
        for port in ports:
            with socket.socket() as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    free = False
        if free:
            return host
    raise OSError("no loopback address with free ports 2525, 2587 and 5300")


def healthcheck(protocol: str, address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={
            **os.environ,
            "HUBD_HEALTHCHECK_PROTOCOL": protocol,
            "HUBD_HEALTHCHECK_ADDRESS": address,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_rendered_configs_run_a_cluster_on_loopback(
    compose: dict[str, Any], tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """dns, hub-1, mbx-1 and outside-1 from the rendered files, only addresses and data moved.

    Mail to corp.test takes hub-1's route to mbx-1, mail to example.net its MX through the
    DNS server to outside-1; the healthcheck script answers for the nodes and the DNS server.
    """
    moved = {service_ip(compose, name): loopback_host() for name in SERVICES}
    pattern = re.compile("|".join(re.escape(ip) for ip in moved) + r"(?![0-9])")

    def to_loopback(text: str, data_dir: Path) -> str:
        text = text.replace(str(subnet(compose)), "127.0.0.0/8")
        text = text.replace(json.dumps(CONTAINER_DATA), json.dumps(str(data_dir)))
        return pattern.sub(lambda match: moved[match[0]], text)

    zone = tmp_path / "zone.txt"
    zone.write_text(
        to_loopback((CONFIG_DIR / "zone.txt").read_text(encoding="utf-8"), tmp_path), "utf-8"
    )
    options = dns_command(compose)
    listen = to_loopback(options["--listen"], tmp_path)
    command = ["dns-server", "--listen", listen, "--zone", str(zone)]
    with (tmp_path / "dns.log").open("ab") as log:
        processes.append(
            subprocess.Popen([sys.executable, "-m", "hubd", *command], stdout=log, stderr=log)
        )
    wait_until(lambda: healthcheck("dns", listen).returncode == 0, 30, "the DNS server")

    nodes: dict[str, NodeProcess] = {}
    for name in ("mbx-1", "outside-1", "hub-1"):
        text = (CONFIG_DIR / f"{name}.toml").read_text(encoding="utf-8")
        path = tmp_path / f"{name}.toml"
        path.write_text(to_loopback(text, tmp_path / name), encoding="utf-8")
        relay = node_config(name).smtp.listen[0]
        node = NodeProcess(path, (moved[relay.host], relay.port), tmp_path / f"{name}.log")
        nodes[name] = node
        node.start()
        assert node.process is not None
        processes.append(node.process)

    hub = f"{moved[service_ip(compose, 'hub-1')]}:2525"
    result = healthcheck("smtp", hub)
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("healthy: smtp"), result.stdout
    closed = f"{moved[service_ip(compose, 'hub-2')]}:2525"  # hub-2 is not started
    result = healthcheck("smtp", closed)
    assert result.returncode == 1, result.stdout
    assert result.stdout.startswith("unhealthy"), result.stdout

    address = HostPort.parse(hub)
    with smtplib.SMTP(address.host, address.port, timeout=30) as client:
        client.sendmail(
            "app@example.org",
            ["bob@corp.test", "erin@example.net"],
            b"Subject: docker configs\r\nMessage-ID: <docker.1@app>\r\n\r\nhi\r\n",
        )
    for name, box in (("mbx-1", "corp.test/bob"), ("outside-1", "example.net/erin")):
        mailbox = tmp_path / name / "mailboxes" / box
        try:
            wait_until(functools.partial(maildir_messages, mailbox), 60, f"mail in {mailbox}")
        except TimeoutError as error:
            logs = "".join(
                f"\n--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-15:])
                for log in sorted(tmp_path.glob("*.log"))
            )
            pytest.fail(f"{error}{logs}")
        (message,) = maildir_messages(mailbox).values()
        assert b"Message-ID: <docker.1@app>" in message

    for name in ("hub-1", "mbx-1", "outside-1"):
        assert nodes[name].terminate() == 0, name
