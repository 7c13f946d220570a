#!/usr/bin/env python3
"""A proxyless gRPC (grpcio) client driven by legate's tests (tests/tests/grpc_clients.rs).

    GRPC_XDS_BOOTSTRAP=bootstrap.json python client.py --proto greeter.proto [--xds-creds]

With --xds-creds the channels use xDS credentials with a plaintext fallback
(grpc.xds_channel_credentials): the TLS the control plane sends for a cluster (gRFC A29) is
used, and a cluster without TLS is called in plaintext. Without it the channels are plaintext
and grpcio ignores any security configuration it receives.

Generates the Greeter stubs from --proto with grpcio-tools into a temporary directory, prints
{"ready": true}, then answers one JSON line per JSON command line on stdin:

    {"op": "call", "target": "xds:///payments", "n": 10, "metadata": {"x-fail-on": "a"},
     "timeout": 5}
      -> {"results": [{"ok": true, "instance": "a"},
                      {"ok": false, "code": "UNAVAILABLE", "details": "..."}]}
    {"op": "quit"}

One channel per target lives as long as the process, so the xDS updates it receives between
commands show in later calls.
"""
import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proto", required=True)
    parser.add_argument("--xds-creds", action="store_true")
    args = parser.parse_args()

    import grpc
    import grpc.experimental
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="legate-grpc-py-")
    atexit.register(shutil.rmtree, out, True)
    proto = os.path.abspath(args.proto)
    include = os.path.dirname(proto)
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{include}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        proto,
    ])
    if rc != 0:
        raise SystemExit(f"protoc failed on {proto} ({rc})")
    sys.path.insert(0, out)
    module = os.path.splitext(os.path.basename(proto))[0]
    pb2 = __import__(f"{module}_pb2")
    pb2_grpc = __import__(f"{module}_pb2_grpc")

    channels = {}

    def stub(target):
        if target not in channels:
            if args.xds_creds:
                creds = grpc.xds_channel_credentials(
                    fallback_credentials=grpc.experimental.insecure_channel_credentials())
                channel = grpc.secure_channel(target, creds)
            else:
                channel = grpc.insecure_channel(target)
            channels[target] = (channel, pb2_grpc.GreeterStub(channel))
        return channels[target][1]

    def reply(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": True, "grpc": grpc.__version__})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        if cmd["op"] != "call":
            reply({"error": f"unknown op {cmd['op']}"})
            continue
        greeter = stub(cmd["target"])
        metadata = list((cmd.get("metadata") or {}).items())
        results = []
        for i in range(int(cmd.get("n", 1))):
            try:
                r = greeter.SayHello(
                    pb2.HelloRequest(name=f"call-{i}"),
                    metadata=metadata,
                    timeout=float(cmd.get("timeout", 5)),
                )
                results.append({"ok": True, "instance": r.instance})
            except grpc.RpcError as e:
                results.append({"ok": False, "code": e.code().name, "details": e.details()})
        reply({"results": results})
    for channel, _ in channels.values():
        channel.close()


if __name__ == "__main__":
    main()
