"""`rediss://` with a password: the pipeline talks TLS + AUTH to a real redis-server, and the secret never
appears in its output; a wrong password is a clear error that names the (redacted) store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
import redis

from pipeline.redis_server import free_port, redis_server_binary

PASSWORD = "s3cret-Pa55"


@pytest.fixture
def tls_server(tmp_path):
    if not shutil.which("openssl"):
        pytest.fail("openssl is needed to make a test certificate (apt-get install openssl)", pytrace=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                             "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:  # exited: no TLS support in this build, or it crashed; either is a failure
            pytest.fail(f"{redis_server_binary()} exited with {proc.returncode} instead of serving TLS: "
                        f"{proc.stdout.read()[-500:]}", pytrace=False)
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield url, client
    proc.kill()
    proc.wait()


def _run(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_pipeline_over_tls_with_auth_never_prints_the_password(tmp_path, tls_server, shared_video, shared_models):
    url, client = tls_server
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras: [{{id: pets, source: {shared_video['pets']}}}]\nstore: \"{url}\"\n"
                   "output: {video: false}\nmatcher: {min_crops: 1}\n")
    proc = _run("run", cfg, "--max-frames", 40, "--output-dir", tmp_path / "out", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    types = [json.loads(f[b"json"])["type"] for _, f in client.xrange("pipeline:events")]
    assert "identity.created" in types and types.count("camera.state") >= 2
    listing = _run("identities", "--store", url, "--json")
    assert listing.returncode == 0 and listing.stdout.strip(), listing.stderr
    assert PASSWORD not in listing.stdout + listing.stderr


def test_wrong_password_is_a_clear_error_without_the_secret(tmp_path, tls_server):
    url, _ = tls_server
    wrong = url.replace(PASSWORD, "not-the-Pa55word")
    proc = _run("identities", "--store", wrong)
    assert proc.returncode != 0
    assert "not-the-Pa55word" not in proc.stdout + proc.stderr
    assert "rediss://:***@127.0.0.1" in proc.stderr, proc.stderr
