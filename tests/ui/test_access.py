"""Who may reach `nscnet ui` (nscnet.ui.access): the loopback rule, MLflow's host and origin checks,
the basic-auth logins; one real `nscnet ui --auth true` on 127.0.0.2 with a run to delete."""

from __future__ import annotations

import base64
import configparser
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nscnet.cli import main
from nscnet.config import ConfigError, SynthConfig, UiConfig
from nscnet.runs import tracking as nstracking
from nscnet.ui import access
from nscnet.ui.dashboards import dashboard_command, mlflow_command
from tests.fixtures_studies import free_port, worker_env


# ------------------------------------------------------------------ the loopback rule

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "lab-machine.example.org"])
def test_a_non_loopback_host_needs_auth_or_expose(host):
    with pytest.raises(ConfigError, match="not a loopback address.*--auth true.*--expose true"):
        UiConfig(host=host)
    assert UiConfig(host=host, auth=True).host == host
    assert UiConfig(host=host, expose=True).host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_hosts_need_no_choice(host):
    assert UiConfig(host=host).loopback


def test_contradictions_and_bad_urls_are_refused():
    with pytest.raises(ConfigError, match="choose one"):
        UiConfig(host="0.0.0.0", auth=True, expose=True)
    with pytest.raises(ConfigError, match="public_url='https://lab.example.org/mlflow' must be"):
        UiConfig(public_url="https://lab.example.org/mlflow")
    with pytest.raises(ConfigError, match="both 5000"):
        UiConfig(mlflow_port=5000, dashboard_port=5000)


def test_cli_refuses_0000_in_one_line_and_starts_nothing(tracking, capsys):
    code = main(["ui", "--host", "0.0.0.0", "--mlflow-port", str(free_port())])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "host=0.0.0.0 is not a loopback address" in err
    assert not Path("optuna.journal").exists()  # refused before anything was touched


# ------------------------------------------------------ host and origin checks, commands

def test_allowed_hosts_and_origins_are_the_served_addresses_only():
    cfg = UiConfig(mlflow_port=5123)
    assert access.allowed_hosts(cfg) == ["localhost:5123", "127.0.0.1:5123", "[::1]:5123"]
    assert access.cors_origins(cfg) == ["http://localhost:5123", "http://127.0.0.1:5123", "http://[::1]:5123"]
    lab = UiConfig(host="0.0.0.0", mlflow_port=5123, auth=True)
    assert f"{socket.gethostname()}:5123" in access.allowed_hosts(lab)
    assert "*" not in ",".join(access.allowed_hosts(lab) + access.cors_origins(lab))
    proxied = UiConfig(mlflow_port=5123, public_url="https://mlflow.lab.example.org")
    assert "mlflow.lab.example.org" in access.allowed_hosts(proxied)
    assert access.cors_origins(proxied)[-1] == "https://mlflow.lab.example.org"


def test_with_auth_the_dashboard_stays_on_loopback_and_mlflow_runs_the_login_app():
    cfg = UiConfig(host="0.0.0.0", auth=True, mlflow_port=5123)
    logins = access.Logins(Path("/nowhere"), {"admin": "a" * 24, "viewer": "v" * 24})
    mlflow = mlflow_command(cfg, "sqlite:///x.db", logins)
    assert mlflow[mlflow.index("--host") + 1] == "0.0.0.0"
    assert mlflow[mlflow.index("--app-name") + 1] == "basic-auth"
    assert mlflow[mlflow.index("--allowed-hosts") + 1] == ",".join(access.allowed_hosts(cfg))
    assert not any("a" * 24 in word for word in mlflow)  # the password goes by environment, not argv
    dashboard = dashboard_command(cfg)
    assert dashboard[dashboard.index("--host") + 1] == "127.0.0.1"
    exposed = dashboard_command(UiConfig(host="0.0.0.0", expose=True))
    assert exposed[exposed.index("--host") + 1] == "0.0.0.0"
    assert "--app-name" not in mlflow_command(UiConfig(), "sqlite:///x.db")


def test_reach_line_says_who_can_reach_what():
    assert "NO LOGIN" in access.reach_line(UiConfig(host="0.0.0.0", expose=True), None)
    assert "this machine only" in access.reach_line(UiConfig(), None)
    logins = access.Logins(Path("/home/me/.config/nscnet/ui-auth"), {"admin": "A" * 24, "viewer": "V" * 24})
    line = access.reach_line(UiConfig(host="0.0.0.0", auth=True), logins)
    assert "credentials.ini" in line and "127.0.0.1 only" in line and "any network" in line
    assert "A" * 24 not in line and "V" * 24 not in line


# ------------------------------------------------------------------------------ logins

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_logins_are_created_once_private_and_reused(tracking, tmp_path_factory):
    folder = tmp_path_factory.mktemp("home") / "ui-auth"
    cfg = UiConfig(auth=True, auth_dir=str(folder))
    first = access.prepare_logins(cfg, tracking)
    assert _mode(folder) == 0o700
    for name in ("credentials.ini", "basic_auth.ini", "basic_auth.db"):
        assert _mode(folder / name) == 0o600, name
    assert set(first.passwords) == {"admin", "viewer"}
    assert all(len(p) >= 12 for p in first.passwords.values())  # MLflow's password rule
    assert first.passwords["admin"] not in (folder / "basic_auth.ini").read_text()
    again = access.prepare_logins(cfg, tracking)
    assert again.passwords == first.passwords
    (folder / "credentials.ini").chmod(0o644)
    with pytest.raises(ConfigError, match="mode 644"):
        access.prepare_logins(cfg, tracking)


def test_logins_stay_out_of_repositories_and_the_tracking_store(tracking, tmp_path, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    (repo / ".git").mkdir()
    with pytest.raises(ConfigError, match="inside the git work tree"):
        access.prepare_logins(UiConfig(auth=True, auth_dir=str(repo / "logins")), tracking)
    for inside in (tmp_path, tmp_path / "mlartifacts" / "logins"):  # beside mlflow.db, in its artifacts
        with pytest.raises(ConfigError, match="part of the tracking store"):
            access.prepare_logins(UiConfig(auth=True, auth_dir=str(inside)), tracking)
    orphan = tmp_path_factory.mktemp("orphan")
    (orphan / "basic_auth.db").write_bytes(b"SQLite format 3\0")
    with pytest.raises(ConfigError, match="credentials.ini is gone"):
        access.prepare_logins(UiConfig(auth=True, auth_dir=str(orphan)), tracking)


# ------------------------------------------------------------------ a real server with logins

def _request(url: str, *, user: tuple[str, str] | None = None, data: dict | None = None,
             headers: dict | None = None) -> tuple[int, str]:
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if user:
        all_headers["Authorization"] = "Basic " + base64.b64encode(":".join(user).encode()).decode()
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=all_headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _start_ui(cwd: Path, *args: str, env: dict) -> tuple[subprocess.Popen, list[str]]:
    ui = subprocess.Popen([sys.executable, "-m", "nscnet", "ui", *args], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], time.monotonic() + 200
    while time.monotonic() < deadline and not any("Press Ctrl-C" in line for line in lines):
        line = ui.stdout.readline()
        if not line and ui.poll() is not None:
            break
        lines.append(line)
    return ui, lines


PROXIED = "mlflow.lab.example.org"


@pytest.mark.slow
def test_ui_with_auth_needs_a_login_to_delete_and_never_shows_the_passwords(tracking, tmp_path, tmp_path_factory):
    with nstracking.start_run(SynthConfig(), "synth") as run:  # a real run in the test's store
        nstracking.log_text("a song", "notes/song.txt")
    run_id = run.info.run_id
    folder = tmp_path_factory.mktemp("home") / "ui-auth"
    (tmp_path / "tmp").mkdir()
    env = {**worker_env(), "TMPDIR": str(tmp_path / "tmp")}  # the servers' logs land under tmp_path
    port, dashboard_port = free_port(), free_port()
    base = f"http://127.0.0.2:{port}"
    api = f"{base}/api/2.0/mlflow"
    ui, lines = _start_ui(tmp_path, "--host", "127.0.0.2", "--auth", "true", "--auth_dir", str(folder),
                          "--mlflow-port", str(port), "--dashboard-port", str(dashboard_port),
                          "--storage", "optuna.journal", "--public-url", f"https://{PROXIED}", env=env)
    try:
        output = "".join(lines)
        assert f"MLflow UI:        {base}" in output, output
        assert str(folder / "credentials.ini") in output
        logins = configparser.ConfigParser()
        logins.read(folder / "credentials.ini")
        admin = ("admin", logins["admin"]["password"])
        viewer = ("viewer", logins["viewer"]["password"])
        delete = {"run_id": run_id}

        assert _request(f"{api}/runs/get?run_id={run_id}")[0] == 401
        assert _request(f"{api}/runs/delete", data=delete)[0] == 401
        assert _request(f"{api}/runs/get?run_id={run_id}", user=("admin", "wrong-password-123"))[0] == 401
        status, body = _request(f"{api}/runs/get?run_id={run_id}", user=viewer)
        assert status == 200 and json.loads(body)["run"]["info"]["lifecycle_stage"] == "active"
        assert _request(f"{api}/runs/delete", user=viewer, data=delete)[0] == 403
        assert nstracking.get_run(run_id).info.lifecycle_stage == "active"

        # a page of another site, or a rebound DNS name, cannot drive the server even with a login
        assert _request(f"{api}/runs/get?run_id={run_id}", user=admin, headers={"Host": "evil.example"})[0] == 403
        assert _request(f"{api}/runs/delete", user=admin, data=delete,
                        headers={"Origin": "http://evil.example"})[0] == 403
        assert nstracking.get_run(run_id).info.lifecycle_stage == "active"

        # what a TLS reverse proxy forwards (Host and Origin of --public-url) is accepted
        proxied = {"Host": PROXIED, "Origin": f"https://{PROXIED}"}
        assert _request(f"{api}/runs/set-tag", user=admin, headers=proxied,
                        data={"run_id": run_id, "key": "via", "value": "proxy"})[0] == 200
        assert _request(f"{api}/runs/delete", user=admin, data=delete, headers={"Origin": base})[0] == 200
        assert nstracking.get_run(run_id).info.lifecycle_stage == "deleted"
        status, body = _request(f"{api}/runs/get?run_id={run_id}", user=admin)
        run_data = json.loads(body)["run"]["data"]  # params and tags
        assert {"key": "via", "value": "proxy"} in run_data["tags"]
        dashboard = _request(f"http://127.0.0.2:{dashboard_port}/api/studies")
        assert dashboard[0] == 200
    finally:
        ui.send_signal(signal.SIGTERM)
        rest, _ = ui.communicate(timeout=60)
    assert ui.returncode == 0, rest
    passwords = [admin[1], viewer[1]]
    assert not any(p in output + rest for p in passwords)
    assert not any(p in json.dumps(run_data) for p in passwords)
    server_logs = list((tmp_path / "tmp").glob("nscnet-ui-*/mlflow.log"))
    assert server_logs and "Created admin user 'admin'" in server_logs[0].read_text()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]  # the store, its artifacts, the logs
    assert any(p.name == "mlflow.db" for p in written) and any(p.name == "song.txt" for p in written)
    written += [folder / "basic_auth.db", folder / "basic_auth.ini"]
    leaks = [str(p) for p in written for secret in passwords if secret.encode() in p.read_bytes()]
    assert leaks == []
    assert os.stat(folder / "basic_auth.db").st_size > 0 and _mode(folder / "basic_auth.db") == 0o600
