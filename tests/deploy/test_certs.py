"""deploy/certs.py and `raregraph deploy certs`: the files flwr 1.41 reads, modes, refusals."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import shutil
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from flwr.cli.supernode.register import try_load_public_key

from deploy.certs import AUTH_DIR, make_certs, ssh_fingerprint
from shared.errors import ConfigError, InputError, OutputExistsError
from tests.raregraph.test_cli import one_line_error, run as cli


def sans(path) -> tuple[list[str], list[str]]:
    ext = x509.load_pem_x509_certificate(path.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]


def test_ca_server_certificate_and_site_keys_are_what_flwr_reads(tmp_path):
    files = make_certs(tmp_path, superlink_host="coordinator.example.org", sites=["site-1", "uk-leeds"])
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert sans(files.server_cert) == (["coordinator.example.org"], [])
    assert (server.not_valid_after_utc - server.not_valid_before_utc).days == 825
    for site, (key, pub) in files.site_keys.items():
        private = load_ssh_private_key(key.read_bytes(), None)  # what flower-supernode does
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        assert load_ssh_public_key(pub.read_bytes()) == private.public_key()
        assert try_load_public_key(pub)  # what `flwr supernode register` does
        assert pub.read_text().rstrip().endswith(f" {site}")
    for private in (files.ca_key, files.server_key, *(k for k, _ in files.site_keys.values())):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    manifest = json.loads((tmp_path / "certs.json").read_text())
    assert manifest["superlink"]["host"] == "coordinator.example.org"
    assert manifest["sites"]["uk-leeds"]["fingerprint"] == ssh_fingerprint(files.site_keys["uk-leeds"][1].read_bytes())


def test_ip_host_goes_in_as_an_ip_address_and_loopback_names_when_asked(tmp_path):
    files = make_certs(tmp_path, superlink_host="10.20.0.5", loopback=True)
    dns, ips = sans(files.server_cert)
    assert dns == ["localhost"] and ips == ["10.20.0.5", "127.0.0.1", "::1"]
    assert [ipaddress.ip_address(i) for i in ips]  # real IP entries, not DNS strings


def test_nothing_is_replaced_without_overwrite_and_the_ca_is_reused(tmp_path):
    first = make_certs(tmp_path, superlink_host="127.0.0.1", sites=["site-1"])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".json"}
    with pytest.raises(OutputExistsError, match="site-1.key: already exists"):
        make_certs(tmp_path, superlink_host="127.0.0.1", sites=["site-1"])
    assert {p: p.read_bytes() for p in before} == before  # nothing written
    second = make_certs(tmp_path, superlink_host="127.0.0.1", sites=["site-1"], overwrite=True)
    assert second.ca_reused and first.ca_cert.read_bytes() == before[first.ca_cert]
    assert second.server_cert.read_bytes() != before[first.server_cert]
    assert second.site_keys["site-1"][0].read_bytes() != before[first.site_keys["site-1"][0]]
    x509.load_pem_x509_certificate(second.server_cert.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(first.ca_cert.read_bytes()))
    # a hospital makes its own key without any CA
    alone = make_certs(tmp_path / "hospital", sites=["site-9"])
    assert alone.ca_cert is None and not (tmp_path / "hospital" / "ca.crt").exists()


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="nothing to make"):
        make_certs(tmp_path / "a")
    with pytest.raises(ConfigError, match="neither an IP address nor a DNS name"):
        make_certs(tmp_path / "b", superlink_host="bad_host!")
    with pytest.raises(ConfigError, match="site name '../x'"):
        make_certs(tmp_path / "c", sites=["../x"])
    with pytest.raises(ConfigError, match="distinct"):
        make_certs(tmp_path / "d", sites=["a", "a"])
    assert not any((tmp_path / n).exists() for n in "abcd")
    make_certs(tmp_path / "e", superlink_host="127.0.0.1")
    (tmp_path / "e" / "ca.key").unlink()
    with pytest.raises(InputError, match="half a CA: ca.key is missing"):
        make_certs(tmp_path / "e", superlink_host="127.0.0.1", overwrite=True)


def test_an_expired_certificate_can_be_made_for_tests(tmp_path):
    past = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    files = make_certs(tmp_path, superlink_host="127.0.0.1", now=past, server_days=1)
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert cert.not_valid_after_utc < dt.datetime.now(dt.timezone.utc)


def test_cli_certs(tmp_path):
    code, stdout, stderr = cli("deploy", "certs", "--out", tmp_path / "c", "--superlink-host", "127.0.0.1", "--loopback",
                               "--sites", "2", "--json")
    assert code == 0, stderr
    out = json.loads(stdout)
    assert set(out["sites"]) == {"site-1", "site-2"} and out["ca_reused"] is False
    assert sorted(p.name for p in (tmp_path / "c" / AUTH_DIR).iterdir()) == [
        "site-1.key", "site-1.pub", "site-2.key", "site-2.pub"]
    code, _, stderr = cli("deploy", "certs", "--out", tmp_path / "c", "--site", "site-2")
    assert code == 1 and "site-2.key: already exists" in one_line_error(stderr)
    code, _, stderr = cli("deploy", "certs", "--out", tmp_path / "d", "--sites", "2", "--site", "x")
    assert code == 1 and "not both" in one_line_error(stderr)
    code, stdout, stderr = cli("deploy", "certs", "--out", tmp_path / "c", "--site", "new-hospital")
    assert code == 0 and "flwr supernode register" in stdout
    shutil.rmtree(tmp_path / "c")


def test_a_ca_key_others_can_read_is_not_reused(tmp_path):
    make_certs(tmp_path, superlink_host="127.0.0.1")
    (tmp_path / "ca.key").chmod(0o644)
    before = (tmp_path / "superlink.crt").read_bytes()
    with pytest.raises(InputError, match=r"ca.key: private key is accessible by others \(mode 0644\).*chmod 600"):
        make_certs(tmp_path, superlink_host="127.0.0.1", overwrite=True)
    assert (tmp_path / "superlink.crt").read_bytes() == before  # nothing remade with it
