"""``raregraph keys``: Ed25519 identity keys for the coordinator and the sites."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared.console import QuietAccepted, cli_errors, console, print_json
from shared.signing.keys import key_id, load_public_key, new_keypair

keys_app = typer.Typer(help="Make and inspect Ed25519 signing keys.", no_args_is_help=True)


@keys_app.command("new")
def keys_new(
    out: Annotated[Path, typer.Option("--out", help="Path prefix: writes PREFIX.key (0600) and PREFIX.pub.")],
    quiet: QuietAccepted = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write a new Ed25519 key pair. Refuses to replace an existing key.

    Example: raregraph keys new --out keys/coordinator
    """
    with cli_errors():
        key_path, pub_path = new_keypair(out)
        kid = key_id(load_public_key(pub_path))
    if json_out:
        print_json({"private_key": str(key_path), "public_key": str(pub_path), "key_id": kid})
    else:
        console.print(f"private key {key_path} (mode 0600, keep it secret)\npublic key  {pub_path}\nkey id      {kid}")
