"""An authenticated bus: a NATS user per role, its credentials, and the nats-server config that
enforces `bus_schemas.permissions` (DESIGN.md section 8).

- Credentials are random (`secrets`, 32 bytes, URL-safe), one JSON file per user,
  `{"user": ..., "password": ...}`, named `nats-<user>.json` (so they can share a secrets
  directory with the store's `<role>.json`), in a 0700 directory, files 0600. Each is made only
  where missing: a restarted platform keeps its credentials, and a node that joins later gets
  its agent's and snapshotter's without touching anyone else's. A service reads exactly its own
  file (`--nats-creds FILE`), never a password from argv or the environment.
- The server config (0600: it holds the passwords) lists every user with its permissions;
  after adding a node, write it again and send the server SIGHUP (`reload_config`): users and
  permissions reload without dropping connections.
- TLS is one setting away: `TlsFiles` in the config, `tls://` URLs, and each client's
  `Credentials.ca_file` to verify the server.
- Streams are created by the operator only (`provision_streams`), before services start; a
  service checks they are there (`require_streams`) since it may not create them.
"""

import json
import os
import secrets
import signal
import ssl
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats
from faststream.nats import NatsUserPassword
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus_schemas import permissions as P
from bus_schemas.permissions import BusUser, Permissions
from bus_schemas.streams import ALL_STREAMS, StreamSpec
from thaw_core import bus
from thaw_core.private_files import publish_once, replace_private

CONFIG_FILE = "nats-server.conf"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A NATS user and its password (left out of repr, so it never reaches a log line), and the
    CA that signed the server's certificate where the bus uses TLS."""

    user: str
    password: str = field(repr=False)
    ca_file: str | None = None

    @property
    def inbox_prefix(self) -> str:
        """The only reply inboxes this user may subscribe to (bus_schemas.permissions)."""
        return P.inbox_prefix(self.user)

    @property
    def subscriber_inbox_prefix(self) -> bytes:
        """What faststream's `broker.subscriber(..., inbox_prefix=)` needs for a pull consumer:
        faststream passes its own default (b"_INBOX.") there, not the connection's."""
        return f"{self.inbox_prefix}.".encode()

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for `nats.connect`: user, password, inbox prefix, TLS context."""
        options: dict[str, Any] = {"user": self.user, "password": self.password, "inbox_prefix": self.inbox_prefix}
        if self.ca_file:
            options["tls"] = tls_context(self.ca_file)
        return options

    def broker_options(self) -> dict[str, Any]:
        """Keyword arguments for faststream's `NatsBroker`: the same, as its `security`. Each
        pull subscriber also needs `inbox_prefix=subscriber_inbox_prefix`."""
        tls = tls_context(self.ca_file) if self.ca_file else None
        return {"security": NatsUserPassword(self.user, self.password, ssl_context=tls),
                "inbox_prefix": self.inbox_prefix}


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The server's certificate chain and private key (PEM)."""

    cert_file: Path
    key_file: Path


class CredentialsError(Exception):
    """A credentials file that cannot be used: which file, why, and what to do about it."""

    def __init__(self, path: Path, why: str, fix: str):
        super().__init__(f"{path}: {why}; {fix}")
        self.path, self.why, self.fix = path, why, fix


class StreamsMissing(RuntimeError):
    """Streams a service needs that nobody provisioned; only the operator may create them."""

    def __init__(self, names: list[str]):
        super().__init__(f"JetStream streams missing: {', '.join(names)}; provision them with the operator's "
                         "credentials first (thaw_core.bus_auth.provision_streams; `thaw up` does it)")
        self.names = names


def tls_context(ca_file: str | Path) -> ssl.SSLContext:
    """A client context that trusts only `ca_file` and checks the server's name."""
    return ssl.create_default_context(cafile=str(ca_file))


def credentials_path(secrets_dir: Path, user: str) -> Path:
    return secrets_dir / f"nats-{user}.json"


def ensure_credentials(secrets_dir: Path, users: Iterable[str]) -> dict[str, Credentials]:
    """Each user's credentials, made (random password) only where its file is missing, so a
    restarted platform keeps them and a joining node adds its own. The directory is made or
    tightened to 0700, files are 0600. Safe against a concurrent caller: a file is published
    whole, and only if still absent. Raises CredentialsError for a file that is not one user's."""
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    found = {}
    for user in users:
        path = credentials_path(secrets_dir, user)
        if not path.exists():
            publish_once(path, json.dumps({"user": user, "password": secrets.token_urlsafe(32)}) + "\n")
        os.chmod(path, 0o600)
        found[user] = read_credentials(path, user)
    return found


def read_credentials(path: Path, user: str | None = None, ca_file: str | Path | None = None) -> Credentials:
    """The credentials in `path` (one user's JSON file), with `ca_file` for a TLS bus. Raises
    CredentialsError if it is unreadable, malformed, or (with `user`) another user's."""
    try:
        raw = json.loads(Path(path).read_text())
        creds = Credentials(user=raw["user"], password=raw["password"], ca_file=str(ca_file) if ca_file else None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(Path(path), f"not a NATS credentials file ({type(exc).__name__})",
                               "restore it, or delete it and restart the platform to make new ones") from None
    if not (isinstance(creds.user, str) and isinstance(creds.password, str) and creds.user and creds.password):
        raise CredentialsError(Path(path), "user and password must be non-empty strings", "delete it and restart")
    if user is not None and creds.user != user:
        raise CredentialsError(Path(path), f"holds user {creds.user!r}, not {user!r}", "delete it and restart")
    return creds


def with_ca(creds: Credentials, ca_file: str | Path) -> Credentials:
    return replace(creds, ca_file=str(ca_file))


def server_config_text(users: Iterable[BusUser], creds: Mapping[str, Credentials], *, listen: str,
                       store_dir: Path, tls: TlsFiles | None = None) -> str:
    """A nats-server config: `listen` (host:port), JetStream storing under `store_dir`, TLS
    where given, and every user of `users` with its password from `creds` and its permissions.
    Nothing else may connect: there is no anonymous user."""
    lines = ["# Written by thaw_core.bus_auth from the credentials directory; rewritten, not edited.",
             f"listen: {json.dumps(listen)}",
             f"jetstream {{ store_dir: {json.dumps(str(store_dir))} }}"]
    if tls is not None:
        lines.append(f"tls {{ cert_file: {json.dumps(str(tls.cert_file))}, key_file: {json.dumps(str(tls.key_file))} }}")
    lines.append(authorization_text(users, creds))
    return "\n".join(lines) + "\n"


def authorization_text(users: Iterable[BusUser], creds: Mapping[str, Credentials]) -> str:
    """nats-server's `authorization` block: every user of `users`, its password and permissions."""
    entries = [{"user": u.name, "password": creds[u.name].password, "permissions": permissions_block(u.permissions)}
               for u in users]
    return f"authorization {{ users: {json.dumps(entries, indent=2)} }}"


def platform_authorization(secrets_dir: Path, nodes: Iterable[str]) -> str:
    """The `authorization` block for every user of a platform with `nodes`, their credentials
    made under `secrets_dir` where missing: what each server of a NATS cluster carries."""
    users = P.platform_users(tuple(nodes))
    return authorization_text(users, ensure_credentials(secrets_dir, [u.name for u in users]))


def permissions_block(p: Permissions) -> dict[str, Any]:
    """nats-server's `permissions` map for `p`. An empty allow-list is written as deny-all:
    nats-server reads a missing allow-list as "everything"."""
    block: dict[str, Any] = {"publish": _rights(p.publish_allow, p.publish_deny),
                             "subscribe": _rights(p.subscribe_allow, p.subscribe_deny)}
    if p.allow_responses:
        block["allow_responses"] = _responses(p)
    return block


def _responses(p: Permissions) -> bool | dict[str, Any]:
    """`allow_responses`: `true` (one answer per request), or its {max, expires} form."""
    if p.responses_max == 1 and not p.responses_expires_s:
        return True
    limits: dict[str, Any] = {"max": p.responses_max}
    if p.responses_expires_s:
        limits["expires"] = f"{p.responses_expires_s}s"
    return limits


def write_server_config(path: Path, text: str) -> Path:
    """Write (or replace, whole) the server config, mode 0600; returns `path`."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return replace_private(path, text)


def write_platform_config(secrets_dir: Path, nodes: Iterable[str], *, listen: str, store_dir: Path,
                          tls: TlsFiles | None = None) -> Path:
    """The whole step for a launcher: credentials for every user of a platform with `nodes`
    (kept where they exist), and the server config for them at `secrets_dir/nats-server.conf`.
    Run it again with one more node, then `reload_config`, when a node joins."""
    users = P.platform_users(tuple(nodes))
    creds = ensure_credentials(secrets_dir, [u.name for u in users])
    text = server_config_text(users, creds, listen=listen, store_dir=store_dir, tls=tls)
    return write_server_config(secrets_dir / CONFIG_FILE, text)


def server_args(config_path: Path) -> list[str]:
    """nats-server's arguments to run with this config (it names its port, store and users)."""
    return ["-c", str(config_path)]


def reload_config(server: subprocess.Popen[bytes]) -> None:
    """Make a running nats-server read its config again: new users and changed permissions
    apply at once, existing connections stay."""
    server.send_signal(signal.SIGHUP)


async def provision_streams(url: str | list[str], operator: Credentials,
                            specs: tuple[StreamSpec, ...] = ALL_STREAMS, replicas: int | None = None) -> None:
    """Create or update the platform's streams as the operator (the only user who may). A
    one-shot step: a server that is away or refuses the operator raises at once. On a cluster,
    `url` lists its servers and `replicas=3` keeps each stream on three of them."""
    nc = await nats.connect(bus.server_urls(url), name="provision-streams", allow_reconnect=False,
                            connect_timeout=5, **operator.connect_options())
    try:
        await bus.ensure_streams(nc.jetstream(), specs, replicas)
    finally:
        await nc.close()


async def require_streams(js: JetStreamContext, specs: tuple[StreamSpec, ...] = ALL_STREAMS) -> None:
    """Return when every stream in `specs` exists; raise StreamsMissing naming those that do not."""
    missing = []
    for spec in specs:
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            missing.append(spec.name)
    if missing:
        raise StreamsMissing(missing)


def for_service(path: Path | None, role: str, node: str = "") -> Credentials | None:
    """A service's bus credentials from its file (`thaw up` gives each its own), None when it
    was given none (an open bus, as in the component tests)."""
    return read_credentials(path, P.user_name(role, node)) if path else None


async def streams_ready(js: JetStreamContext, creds: Credentials | None) -> None:
    """With credentials the operator provisioned the streams (no service may): check they are
    there. Without, on an open bus, create or update them as before."""
    if creds is None:
        await bus.ensure_streams(js)
    else:
        await require_streams(js)


def _rights(allow: tuple[str, ...], deny: tuple[str, ...]) -> dict[str, list[str]]:
    if not allow:
        return {"deny": [P.EVERYTHING]}
    return {"allow": list(allow), **({"deny": list(deny)} if deny else {})}


