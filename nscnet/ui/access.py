"""Who may reach `nscnet ui`: loopback or not, MLflow's host and origin checks, and its logins.

- `dashboard_host(cfg)`: the Optuna dashboard has no login of its own, so
  with `--auth true` it stays on 127.0.0.1 whatever `--host` says.
- `allowed_hosts(cfg)`, `cors_origins(cfg)`: what `mlflow server --allowed-hosts` and
  `--cors-allowed-origins` get: the names and addresses the server is actually reached by
  (and `--public_url`, the address behind a reverse proxy). A request with any other Host
  header (DNS rebinding) or a state-changing request from any other web origin is refused
  with 403 by MLflow's security middleware.
- `prepare_logins(cfg)`: MLflow's basic-auth app. On first start it creates two random
  passwords (user `admin`: everything; user `viewer`: READ, MLflow's `default_permission`) in
  `<auth_dir>/credentials.ini` (mode 0600, folder 0700), writes MLflow's `basic_auth.ini`
  (no secret in it) and keeps MLflow's user database `basic_auth.db` (password hashes) beside
  it. The passwords are never printed or logged: the lines name the file.
- `ensure_viewer(url, logins)`: once the server answers, creates the `viewer` user through
  MLflow's REST API (admin credentials) if it does not exist yet.
- `reach_line(cfg, logins)`: the one line `nscnet ui` prints about who can reach what.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import secrets
import socket
import stat
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import psutil

from nscnet.config import ConfigError, UiConfig
from nscnet.runs.tracking import DEFAULT_ARTIFACTS

ADMIN, VIEWER = "admin", "viewer"
CREDENTIALS = "credentials.ini"
AUTH_INI = "basic_auth.ini"
AUTH_DB = "basic_auth.db"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
ALL_INTERFACES = ("0.0.0.0", "::")


# ------------------------------------------------------------------------- addresses

def dashboard_host(cfg: UiConfig) -> str:
    """Where the Optuna dashboard binds: `cfg.host`, but loopback when logins are on (it has none)."""
    return "127.0.0.1" if cfg.auth and not cfg.loopback else cfg.host


def bracketed(address: str) -> str:
    """An address as it appears in a URL or Host header: IPv6 in brackets."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def url_host(host: str) -> str:
    """The host to put in a URL for a server bound to `host` (all interfaces: 127.0.0.1)."""
    return "127.0.0.1" if host in ALL_INTERFACES else bracketed(host)


def _machine_names() -> list[str]:
    """This machine's host names and interface addresses: what `--host 0.0.0.0` is reached by."""
    names = [socket.gethostname(), socket.getfqdn()]
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6) and "%" not in address.address:
                names.append(bracketed(address.address))
    return names


def served_names(cfg: UiConfig) -> list[str]:
    """The host names and addresses (IPv6 bracketed) a browser can reach the MLflow server by."""
    names = list(LOOPBACK_NAMES)
    if cfg.host in ALL_INTERFACES:
        names += _machine_names()
    else:
        names.append(bracketed(cfg.host))
    return list(dict.fromkeys(n for n in names if n))


def allowed_hosts(cfg: UiConfig) -> list[str]:
    """Host headers MLflow accepts: each served name with the port, and `public_url`'s host."""
    hosts = [f"{name}:{cfg.mlflow_port}" for name in served_names(cfg)]
    if cfg.public_url:
        public = urllib.parse.urlsplit(cfg.public_url)
        hosts += [public.netloc, public.hostname]  # a proxy may forward the name with or without the port
    return list(dict.fromkeys(hosts))


def cors_origins(cfg: UiConfig) -> list[str]:
    """Web origins whose pages may change data (POST/PATCH/DELETE): the UI's own addresses only."""
    origins = [f"http://{name}:{cfg.mlflow_port}" for name in served_names(cfg)]
    if cfg.public_url:
        public = urllib.parse.urlsplit(cfg.public_url)
        origins.append(f"{public.scheme}://{public.netloc}")
    return list(dict.fromkeys(origins))


def security_args(cfg: UiConfig) -> list[str]:
    """`mlflow server` options for its security middleware, set from the served address."""
    return ["--allowed-hosts", ",".join(allowed_hosts(cfg)), "--cors-allowed-origins", ",".join(cors_origins(cfg))]


# ---------------------------------------------------------------------------- logins

@dataclass(frozen=True)
class Logins:
    """The basic-auth files of one `auth_dir`; `passwords` holds {user: password}, never shown."""

    folder: Path
    passwords: dict[str, str]

    @property
    def credentials(self) -> Path:
        return self.folder / CREDENTIALS

    def header(self, user: str) -> str:
        token = base64.b64encode(f"{user}:{self.passwords[user]}".encode()).decode()
        return f"Basic {token}"

    def server_env(self) -> dict[str, str]:
        """Environment of the `mlflow server` process (and only that one) for the basic-auth app."""
        return {"MLFLOW_AUTH_CONFIG_PATH": str(self.folder / AUTH_INI),
                # used by MLflow only to create the admin user on first start; ignored after
                "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
                "MLFLOW_AUTH_ADMIN_PASSWORD": self.passwords[ADMIN],
                # signs the CSRF token of MLflow's sign-up form; one server process, so one per start
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}


def default_auth_dir() -> Path:
    """`$XDG_CONFIG_HOME/nscnet/ui-auth`, else `~/.config/nscnet/ui-auth`."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "nscnet" / "ui-auth"


def _store_folders(tracking_uri: str) -> list[Path]:
    """The local folders of a SQLite tracking store: the database's folder and its artifacts beside it."""
    if not tracking_uri.startswith("sqlite:///"):
        return []
    folder = Path(tracking_uri[len("sqlite:///"):]).resolve().parent
    return [folder, folder / DEFAULT_ARTIFACTS]


def check_auth_dir(folder: Path, tracking_uri: str) -> None:
    """Refuse a logins folder inside a git work tree, beside the tracking database or in its artifacts."""
    for parent in (folder, *folder.parents):
        if (parent / ".git").exists():
            raise ConfigError(f"auth_dir={folder} is inside the git work tree {parent}: keep logins out of "
                              f"repositories (default: {default_auth_dir()})")
    database_folder, artifacts = _store_folders(tracking_uri) or (None, None)
    if folder == database_folder or (artifacts is not None and (folder == artifacts or artifacts in folder.parents)):
        raise ConfigError(f"auth_dir={folder} is part of the tracking store {tracking_uri}, whose files are "
                          f"served or shared: choose another folder (default: {default_auth_dir()})")


def _private_file(path: Path, text: str) -> None:
    """Write `text` to a new file readable by its owner only (created 0600, never wider)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def _check_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} has mode {mode:o}: others may read the logins; run chmod 600 {path}")


def _auth_ini(folder: Path) -> str:
    return ("# MLflow basic-auth settings written by `nscnet ui --auth true`; no secret here.\n"
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{folder / AUTH_DB}\n"
            f"admin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")


def prepare_logins(cfg: UiConfig, tracking_uri: str) -> Logins:
    """Create (first start) or read the logins of `cfg.auth_dir`; write MLflow's auth config."""
    folder = Path(cfg.auth_dir).expanduser().resolve() if cfg.auth_dir else default_auth_dir().resolve()
    check_auth_dir(folder, tracking_uri)
    if not folder.is_dir():
        folder.mkdir(parents=True, mode=0o700)
        folder.chmod(0o700)  # mkdir's mode is reduced by the umask; make it exact
    credentials, database = folder / CREDENTIALS, folder / AUTH_DB
    if not credentials.exists():
        if database.exists() and database.stat().st_size > 0:
            raise ConfigError(f"{database} holds MLflow users but {credentials} is gone: delete {database} "
                              "to create new logins")
        passwords = {ADMIN: secrets.token_urlsafe(18), VIEWER: secrets.token_urlsafe(18)}
        parser = configparser.ConfigParser(interpolation=None)
        for user, password in passwords.items():
            parser[user] = {"username": user, "password": password}
        lines = ["# Logins of `nscnet ui --auth true` (MLflow basic auth). Keep this file private.",
                 f"# {ADMIN}: reads, changes and deletes everything, manages users.",
                 f"# {VIEWER}: reads every experiment, run and artifact; changes none of them.",
                 "# Clients: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.", ""]
        text = StringIO()
        parser.write(text)
        _private_file(credentials, "\n".join(lines) + text.getvalue())
    _check_private(credentials)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(credentials)
    try:
        passwords = {user: parser[user]["password"] for user in (ADMIN, VIEWER)}
    except KeyError as missing:
        raise ConfigError(f"{credentials} has no {missing} entry: delete it and {database} to start over") from None
    ini = folder / AUTH_INI
    ini.unlink(missing_ok=True)
    _private_file(ini, _auth_ini(folder))
    if not database.exists():
        database.touch(mode=0o600)  # SQLite keeps the mode of an existing (empty) file: hashes stay private
    return Logins(folder, passwords)


def _call(url: str, logins: Logins, *, data: dict | None = None) -> tuple[int, dict]:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Authorization": logins.header(ADMIN),
                                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


def ensure_viewer(mlflow_url: str, logins: Logins) -> None:
    """Create the read-only `viewer` user through MLflow's REST API unless it exists."""
    api = f"{mlflow_url}/api/2.0/mlflow/users"
    status, _ = _call(f"{api}/get?username={VIEWER}", logins)
    if status == 200:
        return
    if status in (401, 403):
        raise ConfigError(f"MLflow refused the admin login of {logins.credentials}: it does not match "
                          f"{logins.folder / AUTH_DB}; delete both to create new logins")
    status, _ = _call(f"{api}/create", logins, data={"username": VIEWER, "password": logins.passwords[VIEWER]})
    if status != 200:
        raise ConfigError(f"MLflow did not create the user {VIEWER!r} (HTTP {status})")


# ------------------------------------------------------------------------------ line

def reach_line(cfg: UiConfig, logins: Logins | None) -> str:
    """One line: who can reach the two servers, and what they may do there."""
    if cfg.loopback:
        where = "this machine only"
    elif cfg.host in ALL_INTERFACES:
        where = "any network this machine is on"
    else:
        where = f"the network of {cfg.host}"
    if logins is not None:
        line = (f"Access: MLflow UI reachable from {where}, login required ({VIEWER} reads; {ADMIN} also changes "
                f"and deletes; passwords in {logins.credentials}); the Optuna dashboard has no login and listens "
                f"on {dashboard_host(cfg)} only")
        if not cfg.loopback:
            line += f" (colleagues: ssh -L {cfg.dashboard_port}:127.0.0.1:{cfg.dashboard_port} to this machine)"
    elif cfg.loopback:
        line = ("Access: this machine only, no login: every user of this machine can read, change and delete "
                "runs and studies (--auth true adds a login)")
    elif cfg.expose:
        line = (f"Access: NO LOGIN: anyone on {where} can open ports {cfg.mlflow_port} and {cfg.dashboard_port}, "
                "read every run and artifact and delete runs, experiments, studies and trials")
    else:  # UiConfig refuses this already
        raise ConfigError(f"host={cfg.host!r} is not a loopback address: give --auth true or --expose true")
    if cfg.public_url:
        line += f"; also served as {cfg.public_url} by your reverse proxy"
    return line + "."
