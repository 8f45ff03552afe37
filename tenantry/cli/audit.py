"""`tenantry audit …`: reading the audit stream, exporting it verifiably, verifying exports."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tenantry.cli import audit_proofs
from tenantry.cli.bus import UNREACHABLE, connect_or_explain
from tenantry.cli.sanitize import for_terminal, lines_for_terminal
from tenantry.settings import Settings


def register(verbs: Any) -> None:
    audit = verbs.add_parser("audit", help="the audit stream")
    audit_verbs = audit.add_subparsers(dest="audit_verb", required=True)
    tail = audit_verbs.add_parser(
        "tail", help="print events from the stream: a line each on a terminal, JSON lines piped"
    )
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.add_argument("--since", help="a position (1234) or an RFC 3339 time")
    tail.add_argument("--type", dest="type_filter", help="an event type; workspace.* works")
    tail.add_argument("--fqn", help="only events of this FQN")
    tail.add_argument("-o", "--output", choices=["text", "json"], help="default: text on a tty")
    tail.set_defaults(handler=_tail)

    export = audit_verbs.add_parser(
        "export",
        help="write events as JSON lines exactly as on the stream (verifiable with `verify`)",
    )
    export.add_argument("--since", help="a position (1234) or an RFC 3339 time; inclusive")
    export.add_argument("--until", help="a position or an RFC 3339 time; exclusive")
    export.add_argument(
        "-o",
        "--output",
        type=Path,
        help="a file (default: stdout); beside it go verify_tenantry_export.py, a verifier "
        "needing only Python and `cryptography`, and with --sign-key FILE.pub",
    )
    export.add_argument(
        "--sign-key",
        type=Path,
        help="an Ed25519 private key (PEM): end with a signed checkpoint line",
    )
    export.set_defaults(handler=_export)

    verify = audit_verbs.add_parser(
        "verify",
        help="check the hash chain of an export, or of the live store against the stream; "
        "exits 1 naming the first bad position",
    )
    verify.add_argument("file", nargs="?", help="an export ('-': stdin); none: the live store")
    verify.add_argument(
        "--public-key", type=Path, help="an Ed25519 public key (PEM): require a signed checkpoint"
    )
    audit_proofs.add_verify_options(verify)
    verify.set_defaults(handler=_verify)

    keygen = audit_verbs.add_parser("keygen", help="create an Ed25519 key pair to sign exports")
    keygen.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("tenantry-audit.key"),
        help="the private key's file; the public key goes beside it with .pub appended",
    )
    keygen.set_defaults(handler=_keygen)
    audit_proofs.register(audit_verbs)


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_audit_tail(settings, args))


async def _audit_tail(settings: Settings, args: argparse.Namespace) -> int:
    from tenantry.audit.tail import parse_since, tail
    from tenantry.cli.output import chosen_format

    as_json = chosen_format(args.output) == "json"

    def emit(body: dict[str, object]) -> None:
        print(_tail_line(body, as_json=as_json), flush=True)

    from nats.errors import Error as NatsError

    nc = await connect_or_explain(settings, "audit tail")
    if nc is None:
        return UNREACHABLE
    try:
        await tail(
            nc,
            emit,
            follow=args.follow,
            since=parse_since(args.since),
            type_filter=args.type_filter,
            fqn=args.fqn,
        )
    except NatsError as exc:  # the bus went away: said once, not as a traceback
        url = settings.client_nats_url()
        print(f"tenantry audit tail: lost the bus at {url}: {exc}", file=sys.stderr)
        return UNREACHABLE
    finally:
        await nc.close()
    return 0


def _tail_line(body: dict[str, Any], *, as_json: bool) -> str:
    """One event as `audit tail` prints it: a JSON line, or a line for a person in which
    nothing the event holds reaches the terminal as a control character."""
    from tenantry.audit.tail import human_line

    return json.dumps(body, ensure_ascii=False) if as_json else for_terminal(human_line(body))


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.audit.checkpoint import load_private_key
    from tenantry.audit.tail import parse_since

    try:
        since, until = parse_since(args.since), parse_since(args.until)
        key = load_private_key(args.sign_key) if args.sign_key else None
    except ValueError as exc:
        print(f"tenantry audit export: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        return asyncio.run(_write_export(settings, sys.stdout.buffer, since, until, key))
    # Written beside the target and renamed when complete: a failed export leaves no file
    # that looks whole.
    partial = args.output.with_name(args.output.name + ".partial")
    with partial.open("wb") as out:
        code = asyncio.run(_write_export(settings, out, since, until, key))
    if code == 0:
        os.replace(partial, args.output)
        for path in audit_proofs.write_verifier(args.output, key):
            print(f"wrote {path}", file=sys.stderr)
    else:
        partial.unlink(missing_ok=True)
    return code


async def _write_export(
    settings: Settings, out: Any, since: Any, until: Any, key: Any, through: int | None = None
) -> int:
    from tenantry.audit.checkpoint import checkpoint_line
    from tenantry.audit.export import export

    nc = await connect_or_explain(settings, "audit export")
    if nc is None:
        return UNREACHABLE
    lines = audit_proofs.TreeOfLines(out.write)  # the Merkle root, for a signed checkpoint
    try:
        exported = await export(
            nc, lines.write if key else out.write, since=since, until=until, through=through
        )
    except TimeoutError as exc:
        print(f"tenantry audit export: {exc}", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    span = exported.span
    if exported.skipped:
        copies = len(exported.skipped) - len(exported.broken)
        print(
            f"tenantry audit export: left out {len(exported.skipped)} messages that are not on "
            f"the chain ({copies} copies of events exported)",
            file=sys.stderr,
        )
    if exported.broken:
        print(
            "tenantry audit export: WARNING: THE STREAM'S CHAIN IS BROKEN: "
            f"{', '.join(exported.broken[:20])} are not the store's events, or events are "
            "missing before them; the export stops being complete there. "
            + ("Not signed." if key is not None else "")
            + " Run `tenantry audit verify` (without a file) to compare with the store.",
            file=sys.stderr,
        )
        return 1
    if key is not None:
        out.write(checkpoint_line(span, key, datetime.now(UTC), lines.signed_fields(span)))
    out.flush()
    positions = f", positions {span.first_position}-{span.last_position}" if span.count else ""
    signed = ", signed checkpoint" if key is not None else ""
    print(f"exported {span.count} events{positions}{signed}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.audit.checkpoint import load_public_key
    from tenantry.audit.verify import verify_export

    if args.file is None:
        if args.public_key:
            print("tenantry audit verify: --public-key needs an export file", file=sys.stderr)
            return 2
        return asyncio.run(_verify_live(settings))
    if args.checkpoint and args.file == "-":
        print("tenantry audit verify: --checkpoint needs an export file", file=sys.stderr)
        return 2
    try:
        key = load_public_key(args.public_key) if args.public_key else None
        # A proof or a file of checkpoints (tenantry.cli.audit_proofs), not an export.
        if args.file != "-" and audit_proofs.first_document(Path(args.file)) is not None:
            return audit_proofs.verify_document(Path(args.file), key, args.checkpoint)
        if args.file == "-":
            verdict = verify_export(sys.stdin.buffer, key)
        else:
            # Checkpoints given stand in for the export's own: then the key is for them, and
            # for the export's checkpoint line only if it has one.
            own_key = key if audit_proofs.export_signed(Path(args.file), args.checkpoint) else None
            with Path(args.file).open("rb") as lines:
                verdict = verify_export(lines, own_key)
        print(lines_for_terminal(verdict.report()))
        if verdict.ok and args.checkpoint:
            return audit_proofs.export_against(Path(args.file), args.checkpoint, key)
    except (OSError, ValueError, KeyError) as exc:
        print(f"tenantry audit verify: {for_terminal(str(exc))}", file=sys.stderr)
        return 2
    return 0 if verdict.ok else 1


async def _verify_live(settings: Settings) -> int:
    from tenantry.audit.verify import verify_live
    from tenantry.cli.event_store import NoEventStore, open_event_store

    try:
        service = await asyncio.to_thread(open_event_store, settings)
    except NoEventStore as exc:
        print(f"tenantry audit verify: {exc}", file=sys.stderr)
        return 2
    try:
        nc = await connect_or_explain(settings, "audit verify")
        if nc is None:
            return UNREACHABLE
        try:
            verdict = await verify_live(service.recorder, nc)
            if verdict.ok:
                from tenantry.log.stream_check import publish_all_clear

                await publish_all_clear(nc, verdict.report().splitlines()[0])
        finally:
            await nc.close()
    finally:
        service.close()
    print("the store's hash chain, recomputed, against the stream:")
    print(lines_for_terminal(verdict.report()))
    return 0 if verdict.ok else 1


def _keygen(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.audit.checkpoint import generate_key_pair

    try:
        public = generate_key_pair(args.output)
    except FileExistsError as exc:
        print(f"tenantry audit keygen: {exc}", file=sys.stderr)
        return 1
    print(f"private key: {args.output} (keep it secret; sign with --sign-key)")
    print(f"public key:  {public} (give it to verifiers: --public-key)")
    return 0
