"""Bridge networks' pure parts: subnets, leases (files in a temporary
directory), the nftables table's text, interface names."""

import ipaddress
import os

import pytest

from procview.runtime.network import host_end_name
from procview.runtime.network.ipam import IpamError, Leases, Subnet
from procview.runtime.network.nat import table_text
from procview.runtime.network.ports import PortError, PortMapping, nat_rule, parse_publish


def test_a_subnet_has_its_first_address_as_gateway():
    subnet = Subnet.parse("10.89.0.0/16")
    assert str(subnet.gateway) == "10.89.0.1"
    assert next(subnet.hosts()) == ipaddress.IPv4Address("10.89.0.2")


@pytest.mark.parametrize("text, reason", [
    ("10.89.0.1/16", "host bits set"),
    ("10.89.0.0/31", "too small"),
    ("300.1.0.0/16", "invalid subnet"),
    ("fd00::/64", "invalid subnet"),
    ("bridge", "invalid subnet"),
])
def test_a_malformed_subnet_says_why(text, reason):
    with pytest.raises(IpamError, match=reason):
        Subnet.parse(text)


def test_leases_take_the_lowest_free_address_and_give_it_back(tmp_path):
    leases = Leases(str(tmp_path), Subnet.parse("10.89.0.0/29"))  # 10.89.0.2 .. .6 for containers
    assert [str(leases.take(name)) for name in ("a", "b", "c")] == ["10.89.0.2", "10.89.0.3", "10.89.0.4"]
    leases.release(ipaddress.IPv4Address("10.89.0.3"), "b")
    assert str(leases.take("d")) == "10.89.0.3"
    assert leases.holders() == {"10.89.0.2": "a", "10.89.0.3": "d", "10.89.0.4": "c"}


def test_a_lease_is_given_back_only_by_its_holder(tmp_path):
    leases = Leases(str(tmp_path), Subnet.parse("10.89.0.0/29"))
    address = leases.take("a")
    leases.release(address, "someone-else")
    assert leases.holders() == {str(address): "a"}
    assert leases.release_container("a") == [str(address)]
    assert leases.holders() == {}


def test_a_full_subnet_says_so_and_leaves_no_staging_file(tmp_path):
    leases = Leases(str(tmp_path), Subnet.parse("10.89.0.0/30"))  # one container address: .2
    leases.take("a")
    with pytest.raises(IpamError, match="no free address left in 10.89.0.0/30"):
        leases.take("b")
    assert sorted(os.listdir(tmp_path / "leases")) == ["10.89.0.2"]


def test_the_table_masquerades_what_leaves_each_subnet():
    text = table_text([("procview0", "10.89.0.0/16")])
    assert text.startswith("table ip procview {\n")
    assert "type nat hook postrouting priority srcnat; policy accept;" in text
    assert 'ip saddr 10.89.0.0/16 oifname != "procview0" masquerade' in text


def test_the_host_end_of_a_veth_is_named_by_the_container():
    assert host_end_name("0123456789abcdef") == "pv0123456789ab"
    assert len(host_end_name("f" * 64)) <= 15


@pytest.mark.parametrize("spec, mapping", [
    ("80", PortMapping("", 0, 80, "tcp")),
    ("8080:80", PortMapping("", 8080, 80, "tcp")),
    ("127.0.0.1:8080:80/udp", PortMapping("127.0.0.1", 8080, 80, "udp")),
    ("127.0.0.1::80", PortMapping("127.0.0.1", 0, 80, "tcp")),
])
def test_publish_specs_as_docker_reads_them(spec, mapping):
    assert parse_publish(spec) == mapping


@pytest.mark.parametrize("spec, reason", [
    ("0", "not a port"), ("65536", "not a port"), ("http", "not a port"), ("8080:", "not a port"),
    ("80/sctp", "protocol"), ("::1:80:80", "not an IPv4 address"), ("a:1:2", "not an IPv4 address"),
])
def test_bad_publish_specs_say_why(spec, reason):
    with pytest.raises(PortError, match=reason):
        parse_publish(spec)


def test_a_published_port_is_a_dnat_rule_in_prerouting_and_output():
    everywhere = nat_rule("10.89.0.2", PortMapping("", 8080, 80, "tcp"))
    assert everywhere == "fib daddr type local tcp dport 8080 dnat to 10.89.0.2:80"
    loopback = nat_rule("10.89.0.3", PortMapping("127.0.0.1", 5353, 53, "udp"))
    assert loopback == "ip daddr 127.0.0.1 udp dport 5353 dnat to 10.89.0.3:53"
    text = table_text([("procview0", "10.89.0.0/16")], [everywhere])
    prerouting, output = text.split("chain prerouting {")[1], text.split("chain output {")[1]
    assert everywhere in prerouting.split("}")[0] and everywhere in output.split("}")[0]
    assert str(PortMapping("", 8080, 80, "tcp")) == "80/tcp -> 0.0.0.0:8080"


def test_the_built_in_subnet_is_asked_for_then_pinned_while_in_use(tmp_path, monkeypatch):
    from procview.runtime.network import registry

    root = str(tmp_path)
    monkeypatch.delenv(registry.BUILTIN_SUBNET_ENV, raising=False)
    assert registry.load(root, "bridge") == registry.DEFAULT_BRIDGE
    monkeypatch.setenv(registry.BUILTIN_SUBNET_ENV, "10.77.0.0/24")
    asked = registry.load(root, "bridge")
    assert asked.subnet == "10.77.0.0/24" and asked.interface == "procview0"
    registry.pin_builtin(root, asked)
    registry.pin_builtin(root, asked)  # a second container: the same subnet
    monkeypatch.setenv(registry.BUILTIN_SUBNET_ENV, "10.78.0.0/24")
    assert registry.load(root, "bridge") == asked  # pinned: every command agrees
    with pytest.raises(registry.RegistryError, match="in use with subnet 10.77.0.0/24"):
        registry.pin_builtin(root, registry.requested_builtin())
    registry.unpin_builtin(root)
    assert registry.load(root, "bridge").subnet == "10.78.0.0/24"


def test_the_built_in_subnet_may_not_overlap_a_user_network(tmp_path, monkeypatch):
    from procview.runtime.network import registry

    root = str(tmp_path)
    registry.create(root, "appnet", "10.77.0.0/16", host_routes=[])
    monkeypatch.setenv(registry.BUILTIN_SUBNET_ENV, "10.77.1.0/24")
    with pytest.raises(registry.RegistryError, match="overlaps network appnet's 10.77.0.0/16"):
        registry.pin_builtin(root, registry.requested_builtin())
    assert not os.path.exists(os.path.join(root, "networks", "bridge", "config.json"))
