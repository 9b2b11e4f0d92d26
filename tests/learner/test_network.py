"""Gloo's interface: the one carrying the node's IP, unless the user chose one."""
from __future__ import annotations

from learner.network import GLOO_ENV, interface_for, use_interface_for_gloo

UNASSIGNED = "203.0.113.7"  # TEST-NET-3: documentation only, on no interface


def test_interface_for_loopback_and_an_address_no_interface_has():
    assert interface_for("127.0.0.1") == "lo"
    assert interface_for("::1") == "lo"
    assert interface_for(UNASSIGNED) is None


def test_gloo_gets_the_interface_of_the_node_ip_unless_the_user_set_one():
    env: dict[str, str] = {}
    assert use_interface_for_gloo("127.0.0.1", env) == "lo" and env == {GLOO_ENV: "lo"}
    user = {GLOO_ENV: "eth7"}
    assert use_interface_for_gloo("127.0.0.1", user) == "eth7" and user == {GLOO_ENV: "eth7"}
    unknown: dict[str, str] = {}
    assert use_interface_for_gloo(UNASSIGNED, unknown) is None and unknown == {}  # gloo's own lookup then
