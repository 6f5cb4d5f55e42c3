"""Credentials never show in the repr of the configuration (a log line or a traceback that prints it)."""

from addon.config import parse_config

FILE = """
providers:
  - {name: single, base_url: "https://a.example", auth_value: sk-single-secret-1}
  - name: pool
    base_url: https://b.example
    auth_value: [sk-pool-secret-2, {value: sk-pool-secret-3, rpm: 5}]
settings:
  client_keys: [sk-plain-client-secret-4, {name: alice, key: sk-alice-secret-5}]
  admin_keys: [sk-admin-secret-6]
  shared_state: redis://:secret-password-7@127.0.0.1:6379/0
  key_fingerprint_secret: fingerprint-secret-8
"""


def test_no_credential_in_the_repr_of_the_configuration() -> None:
    config = parse_config(FILE, "p.yaml", {}).config
    shown = repr(config) + str(config) + repr(config.providers) + repr(config.settings)
    assert "secret" not in shown, shown
