"""The PostgreSQL options ssl_mode / ca_cert (community.postgresql's names) against a real server that
serves TLS: a throwaway primary + standby pair (pair_fixtures) whose certificate is signed by a test CA
made by tls_fixtures. Each module that connects to PostgreSQL is run with
ssl_mode=verify-full and the right CA (works, and the server's pg_stat_ssl shows the session used TLS),
then with another CA (fails clearly, naming the certificate, and the cluster is untouched)."""
import os
import pwd

import pytest

from lab_fixtures import module, poll
from pair_fixtures import OS_USER, PgPair
from tls_fixtures import make_pki


@pytest.fixture(scope="module")
def tls_pair():
    pki = make_pki()
    pair = PgPair("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    ent = pwd.getpwnam(OS_USER)
    files = {"ca.crt": pki["ca"], "other-ca.crt": pki["other_ca"]}
    for name, data in files.items():
        with open(os.path.join(pair.base, name), "wb") as handle:
            handle.write(data)
        os.chmod(os.path.join(pair.base, name), 0o644)
    # the server's certificate and key go into each data directory (relative names above): the
    # standby is cloned from the primary, so it serves the same certificate
    real_build_settings = pair.primary.settings

    def settings_with_certs():
        for name, data, mode in (("server.crt", pki["server_cert"], 0o644), ("server.key", pki["server_key"], 0o600)):
            path = os.path.join(pair.primary.data_dir, name)
            with open(path, "wb") as handle:
                handle.write(data)
            os.chmod(path, mode)
            os.chown(path, ent.pw_uid, ent.pw_gid)
        return real_build_settings()
    pair.primary.settings = settings_with_certs
    try:
        pair.build()
    except BaseException:
        pair.destroy()
        raise
    yield pair, os.path.join(pair.base, "ca.crt"), os.path.join(pair.base, "other-ca.crt")
    pair.destroy()


def _conn(pair, node, **extra):
    args = {"login_host": "127.0.0.1", "login_port": node.port, "login_password": pair.password, "connect_timeout": 3}
    args.update(extra)
    return args


def test_health_check_verify_full_with_the_right_ca_and_refused_with_another(tls_pair):
    pair, ca, other = tls_pair
    res = module("fediflow.dr.health_check", _conn(pair, pair.primary, ssl_mode="verify-full", ca_cert=ca, rounds=1))
    assert not res.get("failed"), res.get("msg")
    (target,) = res["rounds"][0]["targets"]
    assert target["ok"] and target["status"] == "primary"
    res = module("fediflow.dr.health_check", _conn(pair, pair.primary, ssl_mode="verify-full", ca_cert=other, rounds=1))
    (target,) = res["rounds"][0]["targets"]
    assert not target["ok"] and "certificate verify failed" in target["error"], target
    # a server whose certificate was refused answered: never counted as "down"
    assert res["state"] != "down" or res.get("warnings"), res
    assert pair.password not in str(res)


def test_integrity_check_database_checks_over_verified_tls(tls_pair):
    pair, ca, other = tls_pair
    good = module("fediflow.dr.integrity_check", _conn(pair, pair.primary, ssl_mode="verify-full", ca_cert=ca,
                                                       checks=["db_sequences"]))
    assert not good.get("failed"), good.get("msg")
    bad = module("fediflow.dr.integrity_check", _conn(pair, pair.primary, ssl_mode="verify-full", ca_cert=other,
                                                      checks=["db_sequences"]))
    assert bad.get("failed") and bad["failed_checks"] == ["db_sequences"], bad
    assert "certificate verify failed" in str(bad["checks"]), bad["checks"]


def _stream_with(pair, root):
    """Point the standby's replication connection at the primary with verify-full and ``root`` as the CA."""
    conninfo = ("host=127.0.0.1 port=%d user=replicator passfile=%s application_name=standby sslmode=verify-full "
                "sslrootcert=%s" % (pair.primary.port, pair.passfile, root))
    pair.standby.query("ALTER SYSTEM SET primary_conninfo = %s", (conninfo,))
    pair.standby.query("SELECT pg_reload_conf()")


def _replication_tls(pair):
    """(standby streaming?, the primary's walsender uses TLS?)."""
    streaming = pair.standby.query("SELECT status FROM pg_stat_wal_receiver") == [("streaming",)]
    ssl = pair.primary.query("SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)")
    return streaming, ssl == [(True,)]


def test_a_standby_given_the_wrong_ca_refuses_the_primary_and_streams_with_the_right_one(tls_pair):
    pair, ca, other = tls_pair
    _stream_with(pair, other)
    # the standby drops its connection and cannot make a new one: the primary's certificate is refused
    assert poll(lambda: _replication_tls(pair) == (False, False), 30), _replication_tls(pair)
    with open(pair.standby.log, encoding="utf-8", errors="replace") as handle:
        assert poll(lambda: "certificate verify failed" in handle.read(), 15)
    _stream_with(pair, ca)
    assert poll(lambda: _replication_tls(pair) == (True, True), 30), _replication_tls(pair)


def test_pg_promote_over_verified_tls_and_a_wrong_ca_touches_nothing(tls_pair):
    pair, ca, other = tls_pair
    refused = module("fediflow.dr.pg_promote", pair.module_args(ssl_mode="verify-full", ca_cert=other, fence_old_primary="stop",
                                                                old_primary_data_dir=pair.primary.data_dir))
    assert refused.get("failed") and "certificate verify failed" in refused["msg"], refused
    assert pair.standby.one("SELECT pg_is_in_recovery()") is True  # untouched
    promoted = module("fediflow.dr.pg_promote", pair.module_args(ssl_mode="verify-full", ca_cert=ca, fence_old_primary="stop",
                                                                 old_primary_data_dir=pair.primary.data_dir))
    assert not promoted.get("failed"), promoted.get("msg")
    assert pair.standby.one("SELECT pg_is_in_recovery()") is False


def test_a_missing_ca_file_is_refused_naming_the_option(tls_pair):
    pair, _ca, _other = tls_pair
    res = module("fediflow.dr.health_check", _conn(pair, pair.primary, ssl_mode="verify-full",
                                                   ca_cert=os.path.join(pair.base, "nope.crt"), rounds=1))
    assert res.get("failed") and "ca_cert" in res["msg"] and "not a readable file" in res["msg"], res
