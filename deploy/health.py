"""The containers' health check: ask a Flower SuperLink's or SuperNode's gRPC health service.

``python -m deploy.health [HOST:PORT]`` (default: ``$RAREGRAPH_HEALTH``) exits 0 when the
service answers SERVING within the timeout, 1 otherwise, with one line saying why. The
process must have been started with ``--health-server-address`` on that address.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ENV = "RAREGRAPH_HEALTH"


def check(address: str, *, timeout: float = 3.0) -> str | None:
    """None when ``address`` answers SERVING; otherwise why not, in one line."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as e:
            return f"{address}: health service did not answer ({e.code().name})"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def main(argv: list[str]) -> int:
    address = argv[0] if argv else os.environ.get(ENV, "")
    if not address:
        print(f"health: no address (give HOST:PORT or set {ENV})", file=sys.stderr)
        return 1
    problem = check(address)
    print(problem or f"{address}: SERVING", file=sys.stderr if problem else sys.stdout)
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
