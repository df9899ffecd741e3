"""Writes tests/data/span_battery.jsonl: our own secrets/PII battery (deterministic).

Every row is ``{"kind", "label", "text", "value"}``: ``label`` is ``pos`` (``value`` must be
redacted, as ``kind``) or ``neg`` (a near miss: nothing may be redacted). Tokens are random
strings in each provider's published format (prefix, length, alphabet, checksum) generated
here; none is a live credential. Run: ``python -m bench.data.make_span_battery``.
"""

from __future__ import annotations

import base64
import json
import random
import string
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "span_battery.jsonl"
AN = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
UP = string.ascii_uppercase + string.digits
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
R = random.Random(23)


def rs(n: int, alpha: str = AN) -> str:
    return "".join(R.choice(alpha) for _ in range(n))


def b62(n: int) -> str:
    s = ""
    while n:
        n, d = divmod(n, 62)
        s = B62[d] + s
    return s.rjust(6, "0")


def crc_token(prefix: str) -> str:
    body = rs(30)
    return f"{prefix}_{body}{b62(zlib.crc32(body.encode()))}"


CONTEXTS = (
    "{name}={value}",
    'export {name}="{value}"',
    "Here is the key you asked for: {value} - keep it safe.",
    '{{"{name}": "{value}", "region": "eu-west-1"}}',
    "    {name}: {value}\n    timeout: 30",
)


def ctx(i: int, name: str, value: str) -> str:
    return CONTEXTS[i % len(CONTEXTS)].format(name=name, value=value)


def tokens() -> list[tuple[str, str, str, list[str]]]:
    """(kind, env name, valid value, near misses) per provider family."""
    uid = str(R.randrange(10**17, 10**18))
    discord = (
        base64.urlsafe_b64encode(uid.encode()).decode().rstrip("=")
        + "."
        + rs(6, AN + "_-")
        + "."
        + rs(27, AN + "_-")
    )
    gh = crc_token("ghp")
    npm = crc_token("npm")
    jwt_head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    jwt_body = base64.urlsafe_b64encode(b'{"sub":"u-4821","role":"admin"}').decode().rstrip("=")
    none_head = base64.urlsafe_b64encode(b'{"alg":"none"}').decode().rstrip("=")
    x = "x"
    return [
        (
            "aws_access_key",
            "AWS_ACCESS_KEY_ID",
            "AKIA" + rs(16, string.ascii_uppercase + "234567"),
            ["AKIAIOSFODNN7EXAMPLE", "AKIA" + "X" * 16, "AKIA" + rs(12, "ABCDEFGHJK")],
        ),
        (
            "aws_access_key",
            "AWS_ACCESS_KEY_ID",
            "A3T" + rs(17, string.ascii_uppercase + "234567"),
            ["A3T" + "X" * 17, "A3TB"],
        ),
        (
            "aws_secret_key",
            "aws_secret_access_key",
            rs(40, AN + "/+"),
            ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "<aws-secret-access-key>"],
        ),
        (
            "gcp_api_key",
            "GOOGLE_API_KEY",
            "AIza" + rs(35, AN + "_-"),
            ["AIza" + x * 35, "AIza" + rs(20)],
        ),
        (
            "gcp_oauth_secret",
            "GOOGLE_CLIENT_SECRET",
            "GOCSPX-" + rs(28, AN + "_-"),
            ["GOCSPX-" + x * 28, "GOCSPX-" + rs(10)],
        ),
        (
            "github_token",
            "GITHUB_TOKEN",
            gh,
            [gh[:-1] + ("A" if gh[-1] != "A" else "B"), "ghp_" + rs(20), "ghp_" + x * 36],
        ),
        (
            "github_token",
            "GH_PAT",
            "github_pat_" + rs(22) + "_" + rs(59),
            ["github_pat_" + x * 22 + "_" + x * 59, "github_pat_" + rs(22)],
        ),
        (
            "gitlab_token",
            "GITLAB_TOKEN",
            "glpat-" + rs(20, AN + "_-"),
            ["glpat-" + x * 20, "glpat-" + rs(8)],
        ),
        ("npm_token", "NPM_TOKEN", npm, [npm[:-2] + "zz", "npm_" + rs(12)]),
        (
            "pypi_token",
            "TWINE_PASSWORD",
            "pypi-AgEIcHlwaS5vcmc" + rs(60, AN + "_-"),
            ["pypi-AgEIcHlwaS5vcmc", "pypi-" + x * 40],
        ),
        (
            "slack_token",
            "SLACK_BOT_TOKEN",
            f"xoxb-{R.randrange(10**10, 10**11)}-{R.randrange(10**12, 10**13)}-{rs(24)}",
            ["xoxb-" + x * 30, "xoxb-1234"],
        ),
        (
            "slack_token",
            "SLACK_USER_TOKEN",
            f"xoxp-{R.randrange(10**10, 10**11)}-{R.randrange(10**10, 10**11)}-"
            f"{R.randrange(10**12, 10**13)}-{rs(32, HEX)}",
            ["xoxp-your-token-here", "xoxp-"],
        ),
        (
            "slack_token",
            "SLACK_TOKEN",
            f"xoxs-{R.randrange(10**10, 10**11)}-{rs(20)}",
            ["xoxs-" + x * 24, "xoxs"],
        ),
        (
            "slack_webhook",
            "SLACK_WEBHOOK",
            f"https://hooks.slack.com/services/T{rs(8, UP)}/B{rs(10, UP)}/{rs(24)}",
            [
                "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
                "https://hooks.slack.com/",
            ],
        ),
        (
            "discord_token",
            "DISCORD_TOKEN",
            discord,
            ["MTIzNDU2Nzg5MDEyMzQ1Njc4OTA.XXXXXX." + x * 27, "abc." + rs(6) + "." + rs(27)],
        ),
        (
            "mailchimp_key",
            "MAILCHIMP_API_KEY",
            rs(32, HEX) + "-us" + str(R.randrange(1, 21)),
            ["0" * 32 + "-us6", rs(16, HEX) + "-us6"],
        ),
        (
            "sendgrid_key",
            "SENDGRID_API_KEY",
            f"SG.{rs(22, AN + '_-')}.{rs(43, AN + '_-')}",
            ["SG." + x * 22 + "." + x * 43, "SG." + rs(10)],
        ),
        (
            "telegram_bot_token",
            "TELEGRAM_BOT_TOKEN",
            f"{R.randrange(10**8, 10**10)}:AA{rs(33, AN + '_-')}",
            [f"{R.randrange(10**8, 10**10)}:AA" + x * 33, "12:34"],
        ),
        (
            "azure_storage_key",
            "AZURE_STORAGE_CONNECTION_STRING",
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey="
            + base64.b64encode(bytes(R.randrange(256) for _ in range(64))).decode()
            + ";EndpointSuffix=core.windows.net",
            [
                "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=<account-key>",
                "AccountKey=" + x * 86 + "==",
            ],
        ),
        (
            "azure_client_secret",
            "AZURE_CLIENT_SECRET",
            rs(3) + "8Q~" + rs(34, AN + "_~.-"),
            ["abc8Q~" + x * 34, "8Q~"],
        ),
        (
            "square_token",
            "SQUARE_ACCESS_TOKEN",
            "sq0atp-" + rs(22, AN + "_-"),
            ["sq0atp-" + x * 22, "sq0atp-" + rs(6)],
        ),
        (
            "square_token",
            "SQUARE_TOKEN",
            "EAAA" + rs(60, AN + "_-"),
            ["EAAA" + x * 60, "EAAA" + rs(10)],
        ),
        (
            "huggingface_token",
            "HF_TOKEN",
            "hf_" + rs(34, string.ascii_letters),
            ["hf_" + x * 34, "hf_hub_download"],
        ),
        (
            "anthropic_key",
            "ANTHROPIC_API_KEY",
            "sk-ant-api03-" + rs(93, AN + "_-") + "AA",
            ["sk-ant-api03-" + x * 40, "sk-ant-"],
        ),
        (
            "openai_key",
            "OPENAI_API_KEY",
            "sk-proj-" + rs(48, AN + "_-"),
            ["sk-proj-" + x * 48, "sk-proj-abc"],
        ),
        (
            "openai_key",
            "OPENAI_KEY",
            "sk-" + rs(20) + "T3BlbkFJ" + rs(20),
            ["sk-" + x * 48, "sk-learn"],
        ),
        ("twilio_key", "TWILIO_API_KEY", "SK" + rs(32, HEX), ["SK" + "0" * 32, "SK" + rs(10, HEX)]),
        (
            "shopify_token",
            "SHOPIFY_ACCESS_TOKEN",
            "shpat_" + rs(32, HEX),
            ["shpat_" + "0" * 32, "shpat_" + rs(12, HEX)],
        ),
        (
            "atlassian_token",
            "JIRA_API_TOKEN",
            "ATATT3xFfGF0" + rs(170, AN + "_-") + "=" + rs(8, "0123456789ABCDEF"),
            ["ATATT3" + x * 150, "ATATT3xFfGF0"],
        ),
        (
            "digitalocean_token",
            "DIGITALOCEAN_TOKEN",
            "dop_v1_" + rs(64, HEX),
            ["dop_v1_" + "0" * 64, "dop_v1_" + rs(20, HEX)],
        ),
        (
            "heroku_key",
            "HEROKU_API_KEY",
            "HRKU-AA" + rs(58, AN + "_-"),
            ["HRKU-" + x * 60, "HRKU-" + rs(10)],
        ),
        (
            "databricks_token",
            "DATABRICKS_TOKEN",
            "dapi" + rs(32, HEX),
            ["dapi" + "0" * 32, "dapi" + rs(10, HEX)],
        ),
        (
            "dropbox_token",
            "DROPBOX_ACCESS_TOKEN",
            "sl.B" + rs(135, AN + "_-"),
            ["sl." + x * 135, "sl.B" + rs(20)],
        ),
        (
            "stripe_key",
            "STRIPE_SECRET_KEY",
            "sk_live_" + rs(24),
            ["sk_live_" + x * 24, "pk_live_" + rs(24)],
        ),
        (
            "postman_key",
            "POSTMAN_API_KEY",
            f"PMAK-{rs(24, HEX)}-{rs(34, HEX)}",
            ["PMAK-" + "0" * 24 + "-" + "0" * 34, "PMAK-" + rs(10, HEX)],
        ),
        (
            "linear_key",
            "LINEAR_API_KEY",
            "lin_api_" + rs(40),
            ["lin_api_" + x * 40, "lin_api_" + rs(10)],
        ),
        (
            "doppler_token",
            "DOPPLER_TOKEN",
            "dp.pt." + rs(43),
            ["dp.pt." + x * 43, "dp.pt." + rs(10)],
        ),
        (
            "vault_token",
            "VAULT_TOKEN",
            "hvs." + rs(90, AN + "_-"),
            ["hvs." + x * 90, "hvs." + rs(10)],
        ),
        (
            "grafana_token",
            "GRAFANA_TOKEN",
            "glsa_" + rs(32) + "_" + rs(8, HEX),
            ["glsa_" + x * 32 + "_" + "0" * 8, "glsa_" + rs(10)],
        ),
        (
            "newrelic_key",
            "NEW_RELIC_API_KEY",
            "NRAK-" + rs(27, UP),
            ["NRAK-" + "X" * 27, "NRAK-" + rs(8, UP)],
        ),
        (
            "sentry_token",
            "SENTRY_AUTH_TOKEN",
            "sntryu_" + rs(64, HEX),
            ["sntryu_" + "0" * 64, "sntryu_" + rs(10, HEX)],
        ),
        (
            "docker_token",
            "DOCKER_PAT",
            "dckr_pat_" + rs(27, AN + "_-"),
            ["dckr_pat_" + x * 27, "dckr_pat_" + rs(8)],
        ),
        (
            "age_key",
            "AGE_KEY",
            "AGE-SECRET-KEY-1" + rs(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"),
            ["AGE-SECRET-KEY-1", "AGE-SECRET-KEY-1" + rs(20, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L")],
        ),
        (
            "alibaba_access_key",
            "ALIBABA_ACCESS_KEY_ID",
            "LTAI" + rs(20),
            ["LTAI" + x * 20, "LTAI" + rs(8)],
        ),
        ("mailgun_key", "MAILGUN_API_KEY", "key-" + rs(32, HEX), ["key-" + "0" * 32, "key-value"]),
        (
            "jwt",
            "ID_TOKEN",
            f"{jwt_head}.{jwt_body}.{rs(43, AN + '_-')}",
            ["eyJub3QiOiJqd3QifQ.eyJhIjoxfQ.abc", "eyJhbGciOiJIUzI1NiJ9"],
        ),
        (
            "jwt",
            "UNSIGNED_TOKEN",
            f"{none_head}.{jwt_body}.",
            ["eyJ" + x * 20 + ".eyJ" + x * 20, "eyJhbGciOiJub25lIn0"],
        ),
    ]


def rows() -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for i, (kind, name, value, misses) in enumerate(tokens()):
        # A bare 40-character AWS secret is only recognisable by its name.
        text = ctx(0 if kind == "aws_secret_key" else i, name, value)
        out.append({"kind": kind, "label": "pos", "text": text, "value": value})
        for j, miss in enumerate(misses):
            out.append(
                {"kind": kind, "label": "neg", "text": ctx(i + j + 1, name, miss), "value": ""}
            )
    pem_body = "\n".join(rs(64, AN + "+/") for _ in range(4))
    out += [
        {
            "kind": "private_key",
            "label": "pos",
            "text": f"key.pem:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpA{pem_body}\n"
            "-----END RSA PRIVATE KEY-----\nend",
            "value": pem_body.split("\n")[2],
        },
        {
            "kind": "private_key",
            "label": "pos",
            "text": '{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQ'
            + rs(60, AN + "+/")
            + '\\n-----END PRIVATE KEY-----\\n"}',
            "value": "MIIEvQ",
        },
        {
            "kind": "private_key",
            "label": "pos",
            "text": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"
            + rs(60)
            + "\n"
            + rs(70),
            "value": "b3BlbnNzaC1rZXktdjEAAAAA",
        },
        {
            "kind": "private_key",
            "label": "neg",
            "text": "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----",
            "value": "",
        },
        {
            "kind": "private_key",
            "label": "neg",
            "text": "A PEM file begins with -----BEGIN PRIVATE KEY----- and ends with an END line.",
            "value": "",
        },
        {
            "kind": "private_key",
            "label": "neg",
            "text": "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n"
            "-----END PUBLIC KEY-----",
            "value": "",
        },
    ]
    creds = [
        ('db_password = "Qm7!vR2#kLp9"', "Qm7!vR2#kLp9"),
        ("DB_PASSWORD=Xr4tLw9qZ2m", "Xr4tLw9qZ2m"),
        ('apiKey := "f81d4fae7dec11d0a765"', "f81d4fae7dec11d0a765"),
        ('IBM-API-KEY : "Wm2cPq8RzT4nLx6vYb"', "Wm2cPq8RzT4nLx6vYb"),
        ('if (password == "Tr0ub4dor&3") { login(); }', "Tr0ub4dor&3"),
        ("'secret_key' => 'h7Gk2pQ9vX4mZr8T',", "h7Gk2pQ9vX4mZr8T"),
        ('{"access_token": "ya9Qe7Lm2Vx5Rt8Kp3Zc"}', "ya9Qe7Lm2Vx5Rt8Kp3Zc"),
        ("client_secret: 9vT2mQ7xR4kL8pZ3", "9vT2mQ7xR4kL8pZ3"),
        ("<password>Hq6!zR3m#Lp8</password>", "Hq6!zR3m#Lp8"),
        ("Server=db;User Id=app;Password=Mx7$kQ2vLr9;", "Mx7$kQ2vLr9"),
        ("curl -u deploy:Zq7!xR3mLp https://api.acme.dev/v1", "Zq7!xR3mLp"),
        (
            "config['api_key'] = 'a8f5f167f44f4964e6c998dee827110c'",
            "a8f5f167f44f4964e6c998dee827110c",
        ),
        ('NSString *password = @"Hq6!zR3m#Lp8";', "Hq6!zR3m#Lp8"),
    ]
    for text, value in creds:
        out.append({"kind": "credential", "label": "pos", "text": text, "value": value})
    for text in (
        'api_key = "insert_key_here"',
        'API_KEY: "a-fake-api-key"',
        'secret = "somefakekey"',
        "password: changeme",
        "token: ${GITHUB_TOKEN}",
        'password = "<your-password>"',
        "api_key: xxxxxxxxxxxxxxxx",
        'password = os.environ["DB_PASSWORD"]',
        "tokenizer: bert-base-uncased",
        "max_tokens: 4096",
        'password = "example-password"',
        "secret: aaaaaaaaaaaaaaaa",
        "password: %DB_PASS%",
        "PASSWORD={{ db_password }}",
        "token_url: https://auth.example.org/token",
        "password = getpass()",
        "if password == confirm_password:",
        "docker run -u 1000:1000 app",
        'password: "Please enter a password"',
    ):
        out.append({"kind": "credential", "label": "neg", "text": text, "value": ""})
    out += [
        {
            "kind": "url_credentials",
            "label": "pos",
            "text": "DATABASE_URL=postgres://app:Vx9qRk4t7Yb@db.internal:5432/prod",
            "value": "Vx9qRk4t7Yb",
        },
        {
            "kind": "url_credentials",
            "label": "pos",
            "text": "clone https://deploy:g7Hq2mZp9w@git.acme.dev/repo.git",
            "value": "g7Hq2mZp9w",
        },
        {
            "kind": "url_credentials",
            "label": "neg",
            "text": "postgres://user:<password>@localhost/db",
            "value": "",
        },
        {
            "kind": "url_credentials",
            "label": "neg",
            "text": "redis://:${REDIS_PASSWORD}@cache:6379",
            "value": "",
        },
        {
            "kind": "url_credentials",
            "label": "neg",
            "text": "mysql://root:****@localhost/test",
            "value": "",
        },
    ]
    pii = [
        (
            "email",
            "pos",
            "Write to maria.lopez@correo.example.es today.",
            "maria.lopez@correo.example.es",
        ),
        ("email", "neg", "Use the @property decorator in Python.", ""),
        ("email", "neg", "meet me @ the station at noon", ""),
        ("phone", "pos", "Call me on +44 20 7946 0958 tomorrow.", "+44 20 7946 0958"),
        ("phone", "pos", "Office: (212) 555-0198", "(212) 555-0198"),
        ("phone", "pos", "Tawagan mo ako sa 0917 555 1234.", "0917 555 1234"),
        ("phone", "pos", "Numaram 0532 555 12 34, arayin.", "0532 555 12 34"),
        ("phone", "pos", "東京の電話番号は03-5555-1234です。", "03-5555-1234"),
        ("phone", "pos", "Mobile 050-555-1234 (Israel)", "050-555-1234"),
        ("phone", "pos", "我的手机号码是 139 5555 1234", "139 5555 1234"),
        ("phone", "pos", "Appelez le 06 12 34 56 78.", "06 12 34 56 78"),
        ("phone", "pos", "Ruf an: +49 30 901820", "+49 30 901820"),
        ("phone", "neg", "Released on 2024-01-15 10:30.", ""),
        ("phone", "neg", "Upgrade to version 10.0.19041.1 now.", ""),
        ("phone", "neg", "Order 4839201755 ships Monday.", ""),
        ("phone", "neg", "Invoice 2023/10/04 attached.", ""),
        ("phone", "neg", "Dial +1 555 if lost.", ""),
        ("credit_card", "pos", "Visa 4539 1488 0343 6467 exp 11/27", "4539 1488 0343 6467"),
        ("credit_card", "pos", "amex 3714-496353-98431", "3714-496353-98431"),
        ("credit_card", "pos", "MC 2223003122003222 charged", "2223003122003222"),
        ("credit_card", "neg", "Order 4539 1488 0343 6468 (typo)", ""),
        ("credit_card", "neg", "IBAN DE89 3704 0044 0532 0130 01 is mistyped", ""),
        ("credit_card", "neg", "tracking 1234567812345670", ""),
        (
            "iban",
            "pos",
            "Send to DE89 3704 0044 0532 0130 00 please",
            "DE89 3704 0044 0532 0130 00",
        ),
        ("iban", "pos", "IBAN: BY13NBRB3600900000002Z00AB00", "BY13NBRB3600900000002Z00AB00"),
        ("iban", "pos", "Konto GB33-BUKB-2020-1555-5555-55", "GB33-BUKB-2020-1555-5555-55"),
        ("iban", "pos", "Vatican VA59 0011 2300 0012 3456 78", "VA59 0011 2300 0012 3456 78"),
        ("iban", "pos", "LY83002048000020100120361 (Libya)", "LY83002048000020100120361"),
        ("iban", "neg", "DE89 3704 0044 0532 0130 01 fails mod-97", ""),
        ("iban", "neg", "GB33BUKB2020155555555 is too short", ""),
        ("iban", "neg", "XX12 3456 7890 1234 5678 is no country", ""),
        ("us_ssn", "pos", "SSN 536-22-1234 on file", "536-22-1234"),
        ("us_ssn", "pos", "ssn: 078.05.1123", "078.05.1123"),
        ("us_ssn", "pos", "Social security number 536 22 1234.", "536 22 1234"),
        ("us_ssn", "neg", "SSN 000-12-3456", ""),
        ("us_ssn", "neg", "area 666-12-3456 never issued", ""),
        ("us_ssn", "neg", "ticket 987-65-4321", ""),
        ("ipv4", "pos", "Blocked 198.51.100.23 at the edge.", "198.51.100.23"),
        ("ipv4", "neg", "999.10.10.10 is no address", ""),
        ("ipv4", "neg", "Install version 1.2.3.4 first", ""),
        ("ipv4", "neg", "OID 1.3.6.1.4.1.311", ""),
        (
            "ipv6",
            "pos",
            "Peer 2001:db8:85a3::8a2e:370:7334 joined.",
            "2001:db8:85a3::8a2e:370:7334",
        ),
        ("ipv6", "pos", "route via fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a"),
        ("ipv6", "neg", "bad 12345:db8::1 address", ""),
        ("ipv6", "neg", "bad 2001::25de::cade address", ""),
        ("ipv6", "neg", "at 12:30:45 sharp", ""),
        ("postal_code", "pos", "1600 Amphitheatre Pkwy, Mountain View, CA 94043", "94043"),
        ("postal_code", "pos", "10 Downing Street, London SW1A 2AA", "SW1A 2AA"),
        ("postal_code", "pos", "Ottawa, ON K1A 0B1", "K1A 0B1"),
        ("postal_code", "neg", "Room 94043 is upstairs", ""),
        ("postal_code", "neg", "The CA certificate 12345 expired", ""),
    ]
    for kind, label, text, value in pii:
        out.append({"kind": kind, "label": label, "text": text, "value": value})
    return out


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as fh:
        for row in rows():
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
