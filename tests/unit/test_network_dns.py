"""What a user network's DNS responder answers (runtime/network/dns.py),
on members made here: the pure part, no sockets."""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from procview.runtime.network import dns as network_dns
from procview.runtime.network.names import Member

SUBNET = ipaddress.IPv4Network("10.90.0.0/16")
INSIDE = "10.90.0.9"  # a container of the network asking
MEMBERS = [
    Member("a" * 64, "10.90.0.2", ("aaaaaaaaaaaa", "db", "Database"), "/x/hosts"),
    Member("b" * 64, "10.90.0.3", ("bbbbbbbbbbbb", "web", "shared"), "/y/hosts"),
    Member("c" * 64, "10.90.0.4", ("cccccccccccc", "worker", "shared"), "/z/hosts"),
]
BOOK = network_dns.book(MEMBERS, SUBNET, network_dns.search_domains("search corp.example\n"))


def ask(name: str, rdtype: str = "A", source: str = INSIDE, tcp: bool = False, **query_options) -> dns.message.Message:
    """The reply to one query, parsed (it must be one)."""
    query = dns.message.make_query(name, rdtype, **query_options)
    decision = network_dns.respond(query.to_wire(), source, BOOK, tcp)
    assert decision.query is None and decision.reply is not None, decision
    reply = dns.message.from_wire(decision.reply)
    assert reply.id == query.id and reply.flags & dns.flags.QR
    return reply


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(rdata.address for rrset in reply.answer for rdata in rrset)


@pytest.mark.parametrize("name", ["db", "db.", "DB", "dAtAbAsE.", "aaaaaaaaaaaa", "db.corp.example", "db.corp.example."])
def test_a_members_names_answer_its_address_whatever_their_case_or_trailing_dot(name):
    reply = ask(name)
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert addresses(reply) == ["10.90.0.2"]
    assert reply.answer[0].ttl == network_dns.TTL == 0
    assert reply.answer[0].name == dns.name.from_text(name)  # the name as asked


def test_a_name_several_members_share_answers_all_their_addresses():
    assert addresses(ask("shared")) == ["10.90.0.3", "10.90.0.4"]


@pytest.mark.parametrize("rdtype", ["AAAA", "MX", "TXT"])
def test_other_types_of_a_members_name_have_no_answer_and_no_error(rdtype):
    reply = ask("web", rdtype)
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer == []


def test_ptr_of_a_members_address_is_its_first_name():
    reply = ask(dns.reversename.from_address("10.90.0.3").to_text(), "PTR")
    assert reply.rcode() == dns.rcode.NOERROR
    assert [rdata.target.to_text() for rdata in reply.answer[0]] == ["bbbbbbbbbbbb."]


def test_ptr_of_an_address_of_the_subnet_no_one_has_is_nxdomain():
    assert ask(dns.reversename.from_address("10.90.3.3").to_text(), "PTR").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("name, rdtype", [
    ("nothere", "A"),
    ("db.elsewhere.example", "A"),
    ("example.org", "AAAA"),
    (dns.reversename.from_address("192.0.2.1").to_text(), "PTR"),
    ("90.10.in-addr.arpa", "SOA"),  # a zone, not an address
])
def test_what_is_not_the_networks_is_forwarded_as_it_came(name, rdtype):
    query = dns.message.make_query(name, rdtype)
    decision = network_dns.respond(query.to_wire(), INSIDE, BOOK)
    assert decision.reply is None and decision.query == query
    servfail = dns.message.from_wire(network_dns.servfail(decision.query, tcp=False))
    assert servfail.id == query.id and servfail.rcode() == dns.rcode.SERVFAIL


def test_a_query_from_outside_the_subnet_is_refused():
    reply = ask("db", source="10.91.0.2")
    assert reply.rcode() == dns.rcode.REFUSED and reply.answer == []


@pytest.mark.parametrize("wire", [
    b"",
    b"\x12",
    b"\x12\x34\x01\x00\x00\x01",  # a header cut short
    bytes(range(256)) * 2,
])
def test_packets_that_are_no_query_are_dropped(wire):
    assert network_dns.respond(wire, INSIDE, BOOK) == network_dns.Decision()


def test_a_response_is_dropped_never_answered():
    response = dns.message.make_response(dns.message.make_query("db", "A"))
    assert network_dns.respond(response.to_wire(), INSIDE, BOOK) == network_dns.Decision()


def test_a_query_unreadable_past_its_question_gets_formerr():
    query = dns.message.make_query("db", "A")
    wire = bytearray(query.to_wire())
    wire[7] = 1  # says it has an answer, and has none
    decision = network_dns.respond(bytes(wire), INSIDE, BOOK)
    reply = dns.message.from_wire(decision.reply)
    assert reply.id == query.id and reply.rcode() == dns.rcode.FORMERR


def test_a_query_of_another_opcode_is_not_implemented():
    query = dns.message.make_query("db", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    reply = dns.message.from_wire(network_dns.respond(query.to_wire(), INSIDE, BOOK).reply)
    assert reply.rcode() == dns.rcode.NOTIMP


def test_an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp():
    many = [Member(f"{i:064x}", f"10.90.1.{i}", ("many",), "/h") for i in range(1, 200)]
    known = network_dns.book(many, SUBNET)
    wire = dns.message.make_query("many", "A").to_wire()
    udp = dns.message.from_wire(network_dns.respond(wire, INSIDE, known).reply)
    assert udp.flags & dns.flags.TC and udp.answer == []
    tcp = dns.message.from_wire(network_dns.respond(wire, INSIDE, known, tcp=True).reply)
    assert len(tcp.answer[0]) == 199


def test_the_hosts_nameservers_are_its_first_three_but_the_responders_own():
    text = ("# comment\nnameserver 127.0.0.53\nnameserver 10.90.0.1\nnameserver fe80::1%eth0\nnameserver ::1\n"
            "nameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch a.example b.example\noptions edns0\n")
    assert network_dns.nameservers(text, own="10.90.0.1") == ["127.0.0.53", "::1", "192.0.2.1"]
    assert network_dns.search_domains(text) == (dns.name.from_text("a.example"), dns.name.from_text("b.example"))
    assert network_dns.nameservers("", own="10.90.0.1") == []
