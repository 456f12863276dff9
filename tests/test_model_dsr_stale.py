"""A SYN without DSR info on a 5-tuple a DSR flow left behind clears the stale dsr_internal
flag (ct_update_dsr), so the backend's reply is not reverse-translated to the old frontend."""

from __future__ import annotations

from ipaddress import ip_address

from model.flows import run_flows
from model.hooks import NodeCtx, Step, Verdict, egress_key
from model.nodeport import from_netdev, to_netdev
from model.scenario import parse
from model.snat import SeededRandom
from model.values import Endpoint, Packet, Proto, TcpFlags
from tests.conftest import ADDRS, NODE_PORT, TARGET_PORT, build_doc

A = ADDRS["ipv4"]
CLIENT = Endpoint(addr=ip_address(A["client"]), port=40000)
BACKEND = Endpoint(addr=ip_address(A["remote"]), port=TARGET_PORT)
FRONTEND = Endpoint(addr=ip_address(A["node1"]), port=NODE_PORT)


def test_plain_syn_clears_a_stale_dsr_flag_and_the_reply_keeps_the_pod_address() -> None:
    sc = parse(build_doc(mode="dsr", placement="remote", source_port=CLIENT.port))
    state, traces = run_flows(sc.world, sc.flows)
    assert traces[0].delivered
    node2 = sc.world.cluster.node("node2")
    key = egress_key(CLIENT, BACKEND, Proto.TCP)
    st = state.nodes["node2"]
    before = st.ct.get(key)
    assert before is not None and before.dsr_internal  # the DSR flow's entry on node2
    ctx = NodeCtx(cfg=sc.world.cfg, name="node2", ip=node2.ip, router_ip=node2.router_ip,
                  ipcache=sc.world.ipcache(), now=state.now + 1, rand=SeededRandom(0))

    # Same 5-tuple, a SYN straight to the pod, no DSR option (nodeport.h ct_update_dsr).
    syn = Packet(src=CLIENT, dst=BACKEND, proto=Proto.TCP, flags=TcpFlags.SYN)
    st, res = from_netdev(ctx, st, syn)
    assert res.verdict is Verdict.DELIVER  # to the local pod
    after = st.ct.get(key)
    assert after is not None and not after.dsr_internal

    reply = Packet(src=BACKEND, dst=CLIENT, proto=Proto.TCP,
                   flags=TcpFlags.SYN | TcpFlags.ACK)
    _st, out = to_netdev(ctx, st, reply)
    assert out.step is not Step.REV_DNAT
    assert out.packet.src == BACKEND != FRONTEND  # not rewritten to the old frontend


def test_plain_syn_to_a_pod_on_a_dsr_node_without_a_ct_entry_is_delivered() -> None:
    """Without DSR info and without a CT entry there is no flag to clear: the SYN goes to
    the pod and the CT map is left alone (nodeport_extract_dsr_v4, ct_update_dsr)."""
    sc = parse(build_doc(mode="dsr", placement="remote"))
    state, _traces = run_flows(sc.world, [])
    node2 = sc.world.cluster.node("node2")
    ctx = NodeCtx(cfg=sc.world.cfg, name="node2", ip=node2.ip, router_ip=node2.router_ip,
                  ipcache=sc.world.ipcache(), now=3, rand=SeededRandom(0))
    syn = Packet(src=CLIENT, dst=BACKEND, proto=Proto.TCP, flags=TcpFlags.SYN)
    st, res = from_netdev(ctx, state.nodes["node2"], syn)
    assert res.verdict is Verdict.DELIVER and res.packet == syn
    assert st.ct.get(egress_key(CLIENT, BACKEND, Proto.TCP)) is None
