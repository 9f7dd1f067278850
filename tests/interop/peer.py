"""A ZeroServices peer written from docs/protocol.md alone, with pyzmq and a UDP socket.

Runs inside the test's network namespace. It
  1. hears a node's multicast announcement (the node serving collection `power`),
  2. announces itself (so the node lists it) and answers ping on its own ROUTER,
  3. sends the node a `resource` request (create) on a DEALER and checks the reply,
  4. receives the node's `power.create.<id>` event on a SUB socket,
  5. checks error replies (unknown kind, invalid JSON),
then prints INTEROP OK and keeps announcing for LINGER seconds.
"""

import json
import os
import socket
import struct
import sys
import threading
import time
import uuid

import zmq

GROUP, PORT = "237.252.249.227", 32000
LINGER = float(os.environ.get("LINGER", "3"))


def fail(msg):
    print("INTEROP FAIL: " + msg, flush=True)
    sys.exit(1)


def resolve(endpoint, source):
    # §1: a 0.0.0.0 host means "the address you heard me from" (127.0.0.1 if that is unknown).
    host = source if source and source != "0.0.0.0" else "127.0.0.1"
    return endpoint.replace("tcp://0.0.0.0:", "tcp://%s:" % host)


def hear_power_node(sock, deadline):
    while time.time() < deadline:
        try:
            data, (src, _) = sock.recvfrom(65536)
        except socket.timeout:
            continue
        try:
            ann = json.loads(data)
        except ValueError:
            continue
        if ann.get("version") == 1 and ann.get("kind", "announce") == "announce" and "power" in ann.get("collections", []):
            return ann, src
    fail("no announcement of a node serving power")


def main():
    ctx = zmq.Context()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    udp.bind((GROUP, PORT))
    udp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton("0.0.0.0")))
    udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    udp.settimeout(0.5)

    ann, src = hear_power_node(udp, time.time() + 15)
    req_ep = resolve(ann["endpoints"]["request"], src)
    pub_ep = resolve(ann["endpoints"]["publish"], src)

    # Our own node: a ROUTER answering ping, a PUB, and announcements every 200 ms.
    router = ctx.socket(zmq.ROUTER)
    rport = router.bind_to_random_port("tcp://127.0.0.1")
    pub = ctx.socket(zmq.PUB)
    pport = pub.bind_to_random_port("tcp://127.0.0.1")
    me = {"version": 1, "kind": "announce", "node_id": uuid.uuid4().hex, "name": "pyzmq-peer",
          "node_type": "observer", "collections": [],
          "endpoints": {"request": "tcp://127.0.0.1:%d" % rport, "publish": "tcp://127.0.0.1:%d" % pport},
          "heartbeat_ms": 200}
    stop = threading.Event()

    def announce_and_answer():
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        next_announce = 0.0
        while not stop.is_set():
            if time.time() >= next_announce:
                udp.sendto(json.dumps(me).encode(), (GROUP, PORT))
                next_announce = time.time() + 0.2
            if dict(poller.poll(50)).get(router):
                frames = router.recv_multipart()
                if len(frames) == 4 and frames[2] == b"ping":
                    router.send_multipart([frames[0], frames[1], b"reply", b'{"ok":true,"data":{}}'])
                elif len(frames) == 4:
                    err = {"ok": False, "error": {"code": "not_found", "message": "python peer serves nothing"}}
                    router.send_multipart([frames[0], frames[1], b"reply", json.dumps(err).encode()])
        bye = dict(me, kind="bye")
        udp.sendto(json.dumps(bye).encode(), (GROUP, PORT))

    t = threading.Thread(target=announce_and_answer, daemon=True)
    t.start()

    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"power")  # plus the dot-boundary check below (protocol.md §5)
    sub.connect(pub_ep)
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(req_ep)
    time.sleep(0.5)  # ZeroMQ slow joiner: let the SUB subscription reach the node's PUB

    def call(kind, body, rid):
        dealer.send_multipart([rid, kind, body])
        if not dealer.poll(5000):
            fail("no reply to %r within 5 s" % kind)
        frames = dealer.recv_multipart()
        if len(frames) != 3 or frames[0] != rid or frames[1] != b"reply":
            fail("malformed reply %r" % frames)
        return json.loads(frames[2])

    pong = call(b"ping", b"{}", b"\x00\x00\x00\x01")
    if pong != {"ok": True, "data": {}}:
        fail("ping: %r" % pong)

    create = {"collection": "power", "action": "create", "args": {"resource_data": {"value": 5, "status": "new"}}}
    reply = call(b"resource", json.dumps(create).encode(), b"py-2")
    if not reply.get("ok") or reply["data"]["resource_data"] != {"value": 5, "status": "new"}:
        fail("create: %r" % reply)
    rid = reply["data"]["resource_id"]

    while True:  # the first event under `power`, at a dot boundary
        if not sub.poll(5000):
            fail("no event within 5 s")
        topic, payload = sub.recv_multipart()
        if topic == b"power" or topic.startswith(b"power."):
            break
    event = json.loads(payload)
    if topic.decode() != "power.create." + rid:
        fail("event topic %r" % topic)
    if event["resource_data"] != {"value": 5, "status": "new"} or event["action"] != "create" or event["seq"] < 1:
        fail("event payload %r" % event)
    if event["node_id"] != ann["node_id"] or not isinstance(event["ts"], int):
        fail("event node_id/ts %r" % event)

    unknown = call(b"frobnicate", b"{}", b"py-3")
    if unknown.get("ok") or unknown["error"]["code"] != "bad_request":
        fail("unknown kind: %r" % unknown)
    broken = call(b"resource", b"{not json", b"py-4")
    if broken.get("ok") or broken["error"]["code"] != "bad_request":
        fail("invalid JSON: %r" % broken)
    missing = call(b"resource", json.dumps({"collection": "power", "action": "get", "resource_id": "nope"}).encode(), b"py-5")
    if missing.get("ok") or missing["error"]["code"] != "not_found":
        fail("missing resource: %r" % missing)

    print("INTEROP OK", flush=True)
    time.sleep(LINGER)
    stop.set()
    t.join(2)


if __name__ == "__main__":
    main()
