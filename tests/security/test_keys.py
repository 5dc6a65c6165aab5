"""API keys: only a keyed hash is stored, the server secret is private, and keys are compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import stat

from sqlalchemy import select


def test_the_catalog_holds_an_hmac_of_each_key_never_the_key(env):
    from kadapt.auth import server_secret
    from kadapt.catalog import ApiKey

    with env.catalog.session() as session:
        rows = {row.id: row for row in session.scalars(select(ApiKey))}
    secret = server_secret(env.settings)
    for name, key in env.keys.items():
        row = rows[env.key_ids[name]]
        stored = " ".join(str(value) for value in (row.prefix, row.key_hash, row.name, row.role, row.groups))
        assert key not in stored and key.split("_", 2)[2] not in stored
        assert row.key_hash == hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()
        # without the server secret the stored value is no plain digest of the key
        assert row.key_hash != hashlib.sha256(key.encode()).hexdigest()


def test_the_generated_server_secret_is_readable_by_its_owner_only(env):
    from kadapt.auth import server_secret

    assert env.settings.secret_key is None  # so the secret is the generated file
    server_secret(env.settings)
    mode = stat.S_IMODE((env.settings.data_dir / "secret.key").stat().st_mode)
    assert mode == 0o600


def test_keys_are_compared_with_compare_digest(env, monkeypatch):
    import kadapt.auth
    from kadapt.auth import AuthError, authenticate

    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(expected, given):
        compared.append((expected, given))
        return real(expected, given)

    monkeypatch.setattr(kadapt.auth.hmac, "compare_digest", spy)
    key = env.keys["reader_member"]
    assert authenticate(env.catalog, env.settings, key).name == "reader_member"
    assert len(compared) == 1 and compared[0][0] == compared[0][1]
    for wrong in (key[:-4] + "AAAA", "kad_000000000000_" + "A" * 32):  # a known prefix, and an unknown one
        compared.clear()
        try:
            authenticate(env.catalog, env.settings, wrong)
        except AuthError:
            pass
        else:
            raise AssertionError(f"{wrong} was accepted")
        assert len(compared) == 1  # an unknown prefix costs the same comparison as a known one
