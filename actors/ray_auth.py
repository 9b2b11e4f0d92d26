"""Getting into a Ray cluster under token authentication (on by default for local clusters since
Ray 2.59): what launch.py prints when Ray is up, and an error naming the fix when an existing
cluster refuses this process's token (Ray itself only retries for 20 s and says it cannot connect)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import grpc
from ray._raylet import AuthenticationTokenLoader
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
from ray.exceptions import AuthenticationError

MODE_VAR = "RAY_AUTH_MODE"
HOST_PORT = re.compile(r"^[\w.\-]+:\d+$")  # a GCS address (ray://, "auto" and URLs are not probed)


class ClusterAuthError(RuntimeError):
    """The cluster wants a token this process does not send (or sends a different one)."""


def token_on() -> bool:
    """Whether this process authenticates with a token (a local ray.init sets RAY_AUTH_MODE=token
    in os.environ when the mode was unset)."""
    return os.environ.get(MODE_VAR, "").lower() == "token"


def token_source() -> str:
    """Where Ray reads this process's token from, in Ray's order."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN variable"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")


def access_help(dashboard_url: str) -> str:
    """How a user opens the dashboard and runs the Ray CLI against the cluster this run uses."""
    url = dashboard_url if dashboard_url.startswith("http") else f"http://{dashboard_url}"
    if not token_on():
        return (f"Ray dashboard: {url} (token authentication is off: {MODE_VAR}="
                f"{os.environ.get(MODE_VAR, 'unset')})\n"
                f"  Ray CLI: ray list actors --address {url}")
    return "\n".join([
        f"Ray dashboard: {url} (token authentication is on)",
        f"  token:    {token_source()}; print it with `ray get-auth-token`",
        "  browser:  open the address and paste the token when the dashboard asks for it",
        f"  HTTP API: curl -H \"Authorization: Bearer $(ray get-auth-token)\" {url}/api/version",
        f"  Ray CLI:  export {MODE_VAR}=token; ray list actors --address {url}",
        f"  (a throwaway local cluster without a token: {MODE_VAR}=disabled python launch.py)",
    ])


def check_cluster_token(address: str, timeout_s: float = 10.0) -> None:
    """Ask the cluster's GCS for its id with the token ray.init would send; a refusal becomes a
    ClusterAuthError that says what to set. An unreachable address is left to ray.init to report."""
    if not HOST_PORT.match(address):
        return
    try:
        loader = AuthenticationTokenLoader.instance()
        header = loader.get_token_for_http_header() if loader.has_token() else {}
    except AuthenticationError as err:  # RAY_AUTH_MODE=token and the token file is missing or empty
        raise ClusterAuthError(f"cannot read this process's Ray token: {err.message}. Set RAY_AUTH_TOKEN_PATH "
                               "to a file holding the cluster's token (`ray get-auth-token` on the head "
                               "node prints it), or set RAY_AUTH_TOKEN.") from None
    with grpc.insecure_channel(address) as channel:
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), metadata=tuple(header.items()), timeout=timeout_s)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise ClusterAuthError(refusal(address)) from None


def refusal(address: str) -> str:
    """What to fix when the cluster at `address` refused this process: no token sent, or the wrong one."""
    if not token_on():
        return (f"the Ray cluster at {address} uses token authentication and this process sends no token "
                f"({MODE_VAR} is {os.environ.get(MODE_VAR, 'unset')}). Set {MODE_VAR}=token and make the "
                "cluster's token (`ray get-auth-token` on the head node prints it) available as "
                "~/.ray/auth_token, in a file named by RAY_AUTH_TOKEN_PATH, or as RAY_AUTH_TOKEN.")
    return (f"the Ray cluster at {address} refused the token from {token_source()}: it is not this "
            "cluster's token. Copy the head node's token (`ray get-auth-token` there) into it, or point "
            "RAY_AUTH_TOKEN_PATH at a file holding it (every node and client must share one token).")
