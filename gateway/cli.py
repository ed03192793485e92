"""scep-gateway serve | check-config | ca ... | entity ..."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

from cryptography import x509

from gateway import assembly, logs, serve
from gateway.app import utc_now
from gateway.ca import bootstrap
from gateway.ca.crl import REASONS
from gateway.ca.local import LocalCA
from gateway.config import loader, resources
from gateway.config.model import KeyPairConfig
from gateway.errors import ConfigError, GatewayError
from gateway.limits import LimitSettings
from gateway.policy.codes import (
    generate_code,
    hash_code,
    hash_generated_code,
    is_generated_shape,
)
from gateway.registry import Snapshot
from gateway.revocation import CrlPublisher
from gateway.settings import Settings
from gateway.store import EndEntity, EntityStatus, PendingStatus, Store


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        config_dir=Path(args.config),
        data_dir=Path(args.data_dir),
        database_url=args.database,
        bind=getattr(args, "bind", "127.0.0.1:8080"),
        workers=getattr(args, "workers", 1),
        **{
            name: getattr(args, name)
            for name in ("store_timeout", "read_timeout", "keep_alive_timeout", "max_connections")
            if hasattr(args, name)
        },
        limits=_limit_settings(args),
    )


def _limit_settings(args: argparse.Namespace) -> LimitSettings:
    given = {name: getattr(args, name, None) for name in _LIMIT_FLAGS}
    return LimitSettings(**{k: v for k, v in given.items() if v is not None})


_LIMIT_FLAGS = {
    "pki_concurrency": (int, "PKIOperations in progress at once, per worker (default 16)"),
    "hash_concurrency": (
        int,
        "enrollment-code checks (scrypt) at once, per worker (default: half the cores, min 1)",
    ),
    "max_wait_seconds": (float, "longest wait for either place before HTTP 503 (default 2)"),
    "failure_burst": (int, "FAILURE answers a client address may get at once (default 50)"),
    "failures_per_second": (float, "... and then how many more per second (default 1)"),
    "failure_sources": (int, "client addresses tracked for that, per worker (default 10000)"),
    "refusal_delay_seconds": (float, "how long a refused source waits for its answer (default 1)"),
}


def _fail(message: str) -> int:
    print(f"scep-gateway: {message}", file=sys.stderr)
    return 1


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(
        f"scep-gateway serving {settings.config_dir} on http://{settings.bind} "
        f"({settings.workers} worker{'s' if settings.workers > 1 else ''})",
        flush=True,
    )
    return serve.run(settings)


def _explain(snapshot: Snapshot, name: str) -> list[str]:
    runtime = snapshot.aliases.get(name)
    if runtime is None:
        return [f"no alias {name!r}"]
    alias = runtime.config
    lines = [f"alias {alias.name} ({alias.source})"]
    values = loader.effective_alias_values(alias)
    width = max(len(k) for k in values) + 2
    for key, value in values.items():
        lines.append(
            f"  {key + ':':<{width}} {json.dumps(value)}  # {alias.origins.get(key, 'default')}"
        )
    lines.append("  pipeline:")
    for phase, types in runtime.pipeline.names:
        lines.append(f"    {phase}: {', '.join(types) or '-'}")
    return lines


def cmd_check_config(args: argparse.Namespace) -> int:
    """Load exactly as the server would, without serving and without writing anything."""
    try:
        config = loader.load(Path(args.directory))
        for warning in assembly.permission_warnings(config, Path(args.data_dir)):
            print(f"warning: {warning}", file=sys.stderr)
        snapshot = assembly.assemble(config, Path(args.data_dir), in_memory=True)
    except ConfigError as error:
        for issue in error.issues:
            print(issue)
        return 1
    if args.explain:
        print("\n".join(_explain(snapshot, args.explain)))
        return 0 if args.explain in snapshot.aliases else 1
    profiles = len(config.certificate_profiles) + len(config.end_entity_profiles)
    print(f"ok: {len(config.aliases)} aliases, {len(config.cas)} CAs, {profiles} profiles")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    """Write the packaged JSON Schemas, for editors of a config repository (`$schema`)."""
    target = Path(args.directory)
    target.mkdir(parents=True, exist_ok=True)
    for name, text in resources.schema_texts().items():
        (target / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(resources.schema_texts())} schemas to {target}")
    return 0


def cmd_ca_issue_ra(args: argparse.Namespace) -> int:
    settings = _settings(args)
    config = loader.load(settings.config_dir)
    cfg = config.cas.get(args.ca)
    if cfg is None:
        return _fail(f"unknown CA {args.ca!r}")
    if cfg.ra is None:
        return _fail(f"CA {args.ca!r} has no `ra` section in {cfg.source}")
    assembly.prepare(config, settings.data_dir, now=utc_now())
    ca = assembly.build_ca(settings.data_dir, cfg)
    bootstrap.issue_ra(settings.data_dir, cfg, ca.issuer, now=utc_now())
    print(f"issued RA signer and encrypter for {args.ca}; reload or restart the server to use them")
    return 0


def cmd_ca_rollover(args: argparse.Namespace) -> int:
    """Create the next CA key and certificate (and RA pair), active from --activate-at."""
    settings = _settings(args)
    config = loader.load(settings.config_dir)
    cfg = config.cas.get(args.ca)
    if cfg is None:
        return _fail(f"unknown CA {args.ca!r}")
    if cfg.rollover is None or cfg.rollover.key.file is None:
        return _fail(f"CA {args.ca!r} has no `rollover` section with a key file in {cfg.source}")
    now = utc_now()
    activate = (
        datetime.fromisoformat(args.activate_at).astimezone(UTC)
        if args.activate_at
        else now + timedelta(hours=args.in_hours)
    )
    assembly.prepare(config, settings.data_dir, now=now)
    runtime = assembly.build_ca(settings.data_dir, cfg)
    if runtime.next is not None and runtime.at(now) is runtime.next:
        # Writing the rollover files now would overwrite the key that is issuing.
        return _fail(
            f"the rollover certificate of {args.ca} is the active CA now: point `certificate` "
            f"and `key` in {cfg.source} at the rollover files, then roll over again"
        )
    if runtime.upcoming(now) is not None and not args.force:
        return _fail(
            "a rollover certificate is already waiting for activation (--force replaces it)"
        )
    try:
        pair = bootstrap.new_rollover(runtime.at(now).issuer, activate_at=activate)
    except ValueError as exc:
        return _fail(str(exc))
    rollover = cfg.rollover
    bootstrap.write_pair(settings.data_dir, KeyPairConfig(rollover.certificate, rollover.key), pair)
    if rollover.signer is not None and rollover.encrypter is not None and cfg.ra is not None:
        signer, encrypter = bootstrap.new_ra(cfg, LocalCA(cfg.name, pair, cfg.digest), now=activate)
        bootstrap.write_pair(settings.data_dir, rollover.signer, signer)
        bootstrap.write_pair(settings.data_dir, rollover.encrypter, encrypter)
    print(
        f"next {args.ca} certificate {pair.certificate.serial_number:x} activates "
        f"{activate:%Y-%m-%d %H:%M}Z; GetNextCACert serves it until then "
        "(a running server picks it up by itself)"
    )
    return 0


async def _with_store(settings: Settings, action: object) -> int:
    store = await Store.open(settings.database)
    try:
        return await action(store)  # type: ignore[operator,no-any-return]
    finally:
        await store.close()


def _expiry(entity: EndEntity) -> str:
    return entity.code_expires_at.isoformat() if entity.code_expires_at else "never"


def _lock(entity: EndEntity) -> str:
    return f"locked since {entity.locked_at.isoformat()}" if entity.locked_at else "no"


def _show(entity: EndEntity) -> str:
    return (
        f"username: {entity.username}\nsubject: {entity.subject_dn}\nca: {entity.ca}\n"
        f"status: {entity.status}\ncreated: {entity.created_at.isoformat()}\n"
        f"updated: {entity.updated_at.isoformat()}\n"
        f"code expires: {_expiry(entity)}\n"
        f"failed attempts: {entity.failed_attempts}\nlocked: {_lock(entity)}"
    )


def _code(args: argparse.Namespace) -> tuple[str, bool]:
    if args.password:
        value = args.password
    elif args.password_env:
        value = os.environ.get(args.password_env)
        if not value:
            raise GatewayError(f"environment variable {args.password_env} is empty")
    else:
        return generate_code(os.urandom), True
    if is_generated_shape(value):
        # Codes of this shape are checked by SHA-256, which only a random code withstands.
        raise GatewayError(
            "a chosen enrollment code must not be 24 letters and digits (the shape of a "
            "generated code): choose another length, or leave out --password to generate one"
        )
    return value, False


def _code_hash(code: str, generated: bool) -> str:
    return hash_generated_code(code) if generated else hash_code(code)


def _code_expiry(args: argparse.Namespace, now: datetime) -> datetime | None:
    if args.code_valid_hours is not None:
        return now + timedelta(hours=args.code_valid_hours)
    if args.expires_at is not None:
        try:
            when = datetime.fromisoformat(args.expires_at)
        except ValueError:
            raise GatewayError(
                f"--expires-at {args.expires_at!r} is not an ISO 8601 time"
            ) from None
        if when.tzinfo is None:
            raise GatewayError("--expires-at needs a time zone (e.g. 2027-01-31T12:00:00Z)")
        return when.astimezone(UTC)
    return None


def cmd_entity(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def action(store: Store) -> int:
        if args.entity_command == "list":
            for e in await store.list_end_entities():
                print(
                    f"{e.username}\t{e.status}\t{e.ca}\t{e.subject_dn}"
                    f"\tcode-expires={_expiry(e)}" + ("\tlocked" if e.locked_at else "")
                )
            return 0
        if args.entity_command == "show":
            entity = await store.get_end_entity(args.username)
            if entity is None:
                return _fail(f"no end entity {args.username!r}")
            print(_show(entity))
            return 0
        code, generated = _code(args)
        now = utc_now()
        expires = _code_expiry(args, now)
        if args.entity_command == "add":
            config = loader.load(settings.config_dir)
            if args.ca not in config.cas:
                return _fail(f"unknown CA {args.ca!r}")
            try:
                dn = x509.Name.from_rfc4514_string(args.dn or f"CN={args.username}")
            except ValueError as exc:
                return _fail(f"invalid DN: {exc}")
            await store.add_end_entity(
                EndEntity(
                    username=args.username,
                    code_hash=_code_hash(code, generated),
                    subject_dn=dn.rfc4514_string(),
                    ca=args.ca,
                    status=EntityStatus.NEW,
                    created_at=now,
                    updated_at=now,
                    code_expires_at=expires,
                )
            )
            print(f"added end entity {args.username}")
        else:
            await store.reset_end_entity(
                args.username, _code_hash(code, generated), now, code_expires_at=expires
            )
            print(
                f"reset end entity {args.username}: it may enroll once more "
                "(failed attempts cleared, unlocked)"
            )
        if generated:
            print(f"enrollment code: {code}")
        return 0

    return asyncio.run(_with_store(settings, action))


def _snapshot(settings: Settings) -> Snapshot:
    config = loader.load(settings.config_dir)
    assembly.prepare(config, settings.data_dir, now=utc_now())
    return assembly.assemble(config, settings.data_dir)


def cmd_approvals(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def action(store: Store) -> int:
        now = utc_now()
        if args.approvals_command == "list":
            await store.expire_pending(now)
            status = None if args.all else PendingStatus.PENDING
            for p in await store.list_pending(status=status):
                print(
                    f"{p.id}\t{p.status}\t{p.alias}\t{p.username or '-'}\t{p.subject_dn}\t"
                    f"transaction={p.transaction_id}\tcreated={p.created_at:%Y-%m-%d %H:%M}Z\t"
                    f"expires={p.expires_at:%Y-%m-%d %H:%M}Z"
                    + (f"\treason={p.reason}" if p.reason else "")
                )
            return 0
        approve = args.approvals_command == "approve"
        decided = await store.decide_pending(args.id, approve=approve, reason=args.reason, now=now)
        verb = "approved" if approve else "rejected"
        print(
            f"{verb} request {decided.id} ({decided.subject_dn}); "
            "the client gets the answer on its next poll"
        )
        return 0

    return asyncio.run(_with_store(settings, action))


def cmd_cert(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def action(store: Store) -> int:
        if args.cert_command == "list":
            for c in await store.list_certificates(username=args.entity, ca=args.ca):
                state = (
                    f"revoked {c.revoked_at:%Y-%m-%d}Z {c.revocation_reason}"
                    if c.revoked_at
                    else "valid"
                )
                print(
                    f"{c.serial:x}\t{c.ca}\t{c.username or '-'}\t{c.subject_dn}\t"
                    f"{c.not_after:%Y-%m-%d}Z\t{state}"
                )
            return 0
        serial = int(args.serial, 16)
        matches = await store.find_certificate_by_serial(serial)
        if args.ca:
            matches = [m for m in matches if m.ca == args.ca]
        if not matches:
            return _fail(f"no certificate with serial {args.serial}")
        if len(matches) > 1:
            return _fail("several CAs issued that serial; name one with --ca")
        snapshot = _snapshot(settings)
        ca = snapshot.cas.get(matches[0].ca)
        if ca is None:
            return _fail(f"CA {matches[0].ca!r} is not in the configuration")
        record, crl = await CrlPublisher(store, utc_now).revoke(ca, serial, args.reason)
        print(
            f"revoked {record.serial:x} ({record.subject_dn}): {args.reason}; "
            f"CRL {crl.number} published"
        )
        return 0

    return asyncio.run(_with_store(settings, action))


def cmd_crl(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def action(store: Store) -> int:
        ca = _snapshot(settings).cas.get(args.ca)
        if ca is None:
            return _fail(f"unknown CA {args.ca!r}")
        record = await CrlPublisher(store, utc_now).publish(ca)
        print(f"CRL {record.number} of {args.ca}, next update {record.next_update:%Y-%m-%d %H:%M}Z")
        return 0

    return asyncio.run(_with_store(settings, action))


def _positive_hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of hours: {text!r}") from None
    if not 0 < value <= 24 * 366 * 10:
        raise argparse.ArgumentTypeError("hours must be positive (and at most ten years)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 3600 seconds")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _add_schemas(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schemas_cmd = sub.add_parser(
        "schemas", help="write the JSON Schemas of the config files to a directory (for editors)"
    )
    schemas_cmd.add_argument("directory")
    schemas_cmd.set_defaults(func=cmd_schemas)


def _add_bounds(serve_cmd: argparse.ArgumentParser) -> None:
    """The serve flags that bound waits and costs (docs/security.md sections 4 and 7)."""
    for flag, env, default, meaning in (
        ("--store-timeout", "STORE_TIMEOUT", 5.0, "overall bound of one database operation"),
        (
            "--read-timeout",
            "READ_TIMEOUT",
            5.0,
            "bound of a silence while reading a request, and of reading a whole request body",
        ),
        (
            "--keep-alive-timeout",
            "KEEP_ALIVE_TIMEOUT",
            5.0,
            "idle connections are closed after this; also the bound of reading a request head",
        ),
    ):
        serve_cmd.add_argument(
            flag,
            type=_positive_seconds,
            # A string default goes through `type` too: a bad environment value is a usage error.
            default=os.environ.get(f"SCEP_GATEWAY_{env}", f"{default:g}"),
            metavar="SECONDS",
            help=f"{meaning} (env SCEP_GATEWAY_{env}, default {default:g})",
        )
    serve_cmd.add_argument(
        "--max-connections",
        type=_positive,
        default=os.environ.get("SCEP_GATEWAY_MAX_CONNECTIONS", "1000"),
        help="open connections per worker; beyond it the longest idle one is closed, or the "
        "new one when none is idle (env SCEP_GATEWAY_MAX_CONNECTIONS, default 1000)",
    )
    for name, (kind, text) in _LIMIT_FLAGS.items():
        serve_cmd.add_argument(
            "--" + name.replace("_", "-"),
            type=_positive if kind is int else _positive_float,
            help=text,
        )


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=os.environ.get("SCEP_GATEWAY_CONFIG", "config.example"),
        help="configuration directory (env SCEP_GATEWAY_CONFIG)",
    )
    common.add_argument(
        "--data-dir",
        default=os.environ.get("SCEP_GATEWAY_DATA", "var"),
        help="state directory: CA files, SQLite database (env SCEP_GATEWAY_DATA)",
    )
    common.add_argument(
        "--database",
        default=os.environ.get("SCEP_GATEWAY_DATABASE"),
        help="SQLAlchemy URL, e.g. postgresql+asyncpg://user@host/db (default: SQLite in the "
        "data directory; env SCEP_GATEWAY_DATABASE)",
    )
    top = argparse.ArgumentParser(prog="scep-gateway", description="SCEP enrollment gateway")
    top.add_argument(
        "--version", action="version", version=f"%(prog)s {metadata.version('scep-gateway')}"
    )
    sub = top.add_subparsers(dest="command", required=True)

    serve_cmd = sub.add_parser("serve", parents=[common], help="serve SCEP over HTTP")
    serve_cmd.add_argument("--bind", default="127.0.0.1:8080", help="HOST:PORT to listen on")
    serve_cmd.add_argument(
        "--workers",
        type=_positive,
        default=int(os.environ.get("SCEP_GATEWAY_WORKERS", "1")),
        help="worker processes sharing the port; one per core uses the machine "
        "(env SCEP_GATEWAY_WORKERS, default 1)",
    )
    _add_bounds(serve_cmd)
    serve_cmd.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", parents=[common], help="validate a config directory")
    check.add_argument("directory")
    check.add_argument("--explain", metavar="ALIAS", help="print the effective values of an alias")
    check.set_defaults(func=cmd_check_config)
    _add_schemas(sub)

    ca = sub.add_parser("ca", help="CA operations")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)
    issue_ra = ca_sub.add_parser(
        "issue-ra", parents=[common], help="issue the RA signing + encryption pair of a CA"
    )
    issue_ra.add_argument("ca")
    issue_ra.set_defaults(func=cmd_ca_issue_ra)
    rollover = ca_sub.add_parser(
        "rollover", parents=[common], help="create the next CA certificate (GetNextCACert)"
    )
    rollover.add_argument("ca")
    when = rollover.add_mutually_exclusive_group()
    when.add_argument("--activate-at", help="ISO 8601 time the new CA takes over")
    when.add_argument("--in-hours", type=float, default=24.0, help="takes over after (default 24)")
    rollover.add_argument("--force", action="store_true", help="replace a waiting rollover")
    rollover.set_defaults(func=cmd_ca_rollover)

    entity = sub.add_parser("entity", help="end entities for CA mode")
    ent_sub = entity.add_subparsers(dest="entity_command", required=True)
    for name, help_text in (
        ("add", "register an end entity (CN = username, challenge = enrollment code)"),
        ("reset", "set a new enrollment code and allow one more enrollment"),
    ):
        p = ent_sub.add_parser(name, parents=[common], help=help_text)
        p.add_argument("username", nargs="?" if name == "add" else None)
        if name == "add":
            p.add_argument("--username", dest="username_opt")
            p.add_argument("--dn", help="subject DN for the certificate (default CN=<username>)")
            p.add_argument("--ca", required=True, help="CA name")
        p.add_argument("--password", help="enrollment code (default: generate and print one)")
        p.add_argument("--password-env", help="read the enrollment code from this env variable")
        valid = p.add_mutually_exclusive_group()
        valid.add_argument(
            "--code-valid-hours",
            type=_positive_hours,
            help="the code expires this many hours from now (default: never)",
        )
        valid.add_argument(
            "--expires-at", help="the code expires at this ISO 8601 time (default: never)"
        )
        p.set_defaults(func=cmd_entity)
    lst = ent_sub.add_parser("list", parents=[common], help="list end entities")
    lst.set_defaults(func=cmd_entity)
    show = ent_sub.add_parser("show", parents=[common], help="show one end entity")
    show.add_argument("username")
    show.set_defaults(func=cmd_entity)
    _operations_parsers(sub, common)
    return top


def _operations_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """approvals, cert and crl: what an operator does day to day."""
    approvals = sub.add_parser("approvals", help="requests waiting for approval")
    appr_sub = approvals.add_subparsers(dest="approvals_command", required=True)
    appr_list = appr_sub.add_parser("list", parents=[common], help="list pending requests")
    appr_list.add_argument("--all", action="store_true", help="also decided and expired ones")
    appr_list.set_defaults(func=cmd_approvals)
    for name in ("approve", "reject"):
        p = appr_sub.add_parser(name, parents=[common], help=f"{name} a pending request")
        p.add_argument("id", type=int)
        p.add_argument("--reason", help="recorded with the decision (a rejected client sees it)")
        p.set_defaults(func=cmd_approvals)

    cert = sub.add_parser("cert", help="issued certificates")
    cert_sub = cert.add_subparsers(dest="cert_command", required=True)
    cert_list = cert_sub.add_parser("list", parents=[common], help="list certificates")
    cert_list.add_argument("--entity", help="only this end entity's")
    cert_list.add_argument("--ca", help="only this CA's")
    cert_list.set_defaults(func=cmd_cert)
    revoke = cert_sub.add_parser("revoke", parents=[common], help="revoke and publish a CRL")
    revoke.add_argument("serial", help="serial number in hex, as `cert list` shows it")
    revoke.add_argument("--reason", default="unspecified", choices=sorted(REASONS))
    revoke.add_argument("--ca", help="the issuing CA, if several issued that serial")
    revoke.set_defaults(func=cmd_cert)

    crl = sub.add_parser("crl", help="certificate revocation lists")
    crl_sub = crl.add_subparsers(dest="crl_command", required=True)
    publish = crl_sub.add_parser("publish", parents=[common], help="sign a new CRL now")
    publish.add_argument("ca")
    publish.set_defaults(func=cmd_crl)


def main(argv: Sequence[str] | None = None) -> int:
    logs.configure(os.environ.get("SCEP_GATEWAY_LOG_LEVEL", "INFO"))
    args = parser().parse_args(argv)
    if getattr(args, "username_opt", None):
        args.username = args.username_opt
    if getattr(args, "entity_command", None) == "add" and not args.username:
        return _fail("entity add needs --username")
    try:
        result: int = args.func(args)
    except ConfigError as error:
        for issue in error.issues:
            print(issue, file=sys.stderr)
        return 1
    except GatewayError as error:
        return _fail(error.client_text)
    return result


if __name__ == "__main__":
    sys.exit(main())
