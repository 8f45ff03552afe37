"""The command service: turns one command — or one apply, many commands decided in turn — into
aggregate changes saved in one transaction, together with its idempotency record."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.application import Application as EventSourcedApplication
from eventsourcing.persistence import Notification, RecordConflictError, Recording
from eventsourcing.utils import Environment, get_topic

from domain.access_request import Governance
from domain.apply import AppliedCommand, ApplyReply, apply_fingerprint, refused_at
from domain.authorization import SYSTEM_ACTOR, Authorization
from domain.base import Aggregate, CommandContext, acting_as, event_type, in_trigger_order
from domain.clock import Clock, system_clock
from domain.command_record import ApplyRecord, CommandRecord
from domain.commands import Command
from domain.environment import Environment as EnvironmentAggregate
from domain.errors import Conflict, DomainError, ValidationFailed
from domain.handlers import handler_for
from domain.mapper import JsonTranscoder, PydanticMapper
from domain.positions import position_of
from domain.seeding import DEFAULT_ENVIRONMENTS, Seed
from domain.session import Session
from domain.sqlite_store import SQLiteRecorder
from tenantry.protocol import CommandReply

SEED_ACTOR = SYSTEM_ACTOR


# The name the domain used for the command reply before it had one shape (tenantry.protocol).
CommandResult = CommandReply


@dataclass(frozen=True)
class _Decision:
    """A decided command, not yet saved."""

    command_id: str
    events: list[Any]
    # The event creating the command's record (saved last, after `events`).
    record: CommandRecord.Handled
    fqn: str
    aggregate_id: str
    version: int
    names: list[str]
    touched: frozenset[UUID]

    def result(self, position: int) -> CommandReply:
        return CommandReply(
            command_id=self.command_id,
            fqn=self.fqn,
            aggregate_id=self.aggregate_id,
            version=self.version,
            position=position,
            events=self.names,
            replayed=False,
        )


def fingerprint(command: Command, actor: str) -> str:
    """What must match for a command id to be replayed: the same command from the same actor
    (so nobody learns another actor's answer, or gets a refused command "replayed")."""
    body = command.model_dump_json()
    return hashlib.sha256(f"{command.wire_name}\n{actor}\n{body}".encode()).hexdigest()


class TenancyService(EventSourcedApplication[UUID]):
    name = "tenantry"
    env: ClassVar[dict[str, str]] = {
        "MAPPER_TOPIC": get_topic(PydanticMapper),
        "TRANSCODER_TOPIC": get_topic(JsonTranscoder),
        # Aggregates that gather many events (a storage integration's repos, a cluster's
        # workspaces, a repo's grants) are read by most commands: rebuilding one from all its
        # events each time made writes slower as the tenancy grew (O(n) per command). Cached,
        # an aggregate is brought up to date with only the events stored since (fast-forward,
        # so several command services stay right) and handed out as a copy, so a refused
        # command's changes never reach the cache.
        "AGGREGATE_CACHE_MAXSIZE": "2000",
        "AGGREGATE_CACHE_FASTFORWARD": "y",
    }

    def __init__(
        self,
        env: Mapping[str, str],
        authorization: Authorization | None = None,
        max_attempts: int = 10,
        clock: Clock = system_clock,
        governance: Governance | None = None,
    ) -> None:
        self.authorization = authorization or Authorization()
        self.governance = governance or Governance()
        self.max_attempts = max_attempts
        # Every event's time comes from this clock (tests pass a controlled one).
        self.clock = clock
        # Called (from the saving thread) after every commit with the rows it stored, in store
        # order: wakes followers of the log (relay, projections) in this process without waiting
        # for their next poll, and hands the relay what it would otherwise read back.
        self.listeners: list[Callable[[Sequence[Notification]], None]] = []
        super().__init__(dict(env))

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        recordings = super().save(*objs, **kwargs)
        self._committed(recordings)
        return recordings

    def _committed(self, recordings: Sequence[Recording[UUID]]) -> None:
        committed = [r.notification for r in recordings]
        for listener in self.listeners:
            listener(committed)

    def _save_events(self, events: Sequence[Any]) -> list[Recording[UUID]]:
        """Save domain events already collected from their aggregates, in one transaction.

        What `save` does for events, through the application's event store (`events.put`)
        without `save`'s runtime-protocol `isinstance` of every object (a few tens of
        microseconds a command on Python 3.11): `save` would then take snapshots (none are
        configured here) and put aggregates in the cache when it does not fast-forward (it
        is given none: these are events). Anything else configured goes through `save`."""
        if self.snapshots is not None:
            recordings: list[Recording[UUID]] = self.save(*events)
            return recordings
        recordings = self.events.put(events)
        self._committed(recordings)
        return recordings

    def construct_env(self, name: str, env: Any = None) -> Environment:
        # Only what the composition root passes: never the process environment.
        settings = {**type(self).env, **(env or {})}
        if settings.get("PERSISTENCE_MODULE") == "eventsourcing.sqlite":
            # eventsourcing's SQLite recorder reading an aggregate without its pool's
            # bookkeeping (domain/sqlite_store.py), unless the caller chose a recorder.
            settings.setdefault("APPLICATION_RECORDER_TOPIC", get_topic(SQLiteRecorder))
        return Environment(name, settings)

    def close(self) -> None:
        super().close()
        if isinstance(self.recorder, SQLiteRecorder):
            self.recorder.close_readers()

    def handle(self, command: Command, context: CommandContext) -> CommandReply:
        """Apply `command` all-or-nothing. A command id seen before returns its first answer.

        Raises a DomainError (with its wire code) when the command is refused."""
        for attempt in range(self.max_attempts):
            # The first attempt takes the command id for new (see `_decide`): a clash of its
            # record with one already stored sends it round again, looking this time.
            decision = self._decide(command, context, seen_before=attempt > 0)
            if isinstance(decision, CommandReply):
                return decision
            try:
                recordings = self._save_events([*decision.events, decision.record])
            except RecordConflictError:
                continue  # another writer got there first: decide again on fresh state
            return decision.result(recordings[-1].notification.id)
        raise Conflict(
            f"{command.wire_name} kept clashing with concurrent writes "
            f"({self.max_attempts} attempts); try again",
            attempts=self.max_attempts,
        )

    def handle_batch(
        self, items: Sequence[tuple[Command, CommandContext]]
    ) -> list[CommandReply | DomainError]:
        """Apply concurrent commands, grouping the independent ones into one transaction.

        Commands whose decisions read or wrote the same aggregate (or share a command id) as an
        earlier one in the batch are run alone afterwards, as is everything in the batch if the
        group's save clashes with another writer: each command stays all-or-nothing and the
        group is equivalent to running its members one after another."""
        results: list[CommandReply | DomainError | None] = [None] * len(items)
        group: list[tuple[int, _Decision]] = []
        alone: list[int] = []
        touched: set[UUID] = set()
        for index, (command, context) in enumerate(items):
            try:
                decision = self._decide(command, context, seen_before=False)
            except DomainError as refusal:
                results[index] = refusal
                continue
            if isinstance(decision, CommandReply):
                results[index] = decision
            elif decision.touched & touched:
                alone.append(index)
            else:
                touched |= decision.touched
                group.append((index, decision))
        # A group of one (a lone command) is saved as decided, like a bigger group: deciding
        # it again alone would double its cost. A clash sends it to `handle`, as any group.
        if group:
            events = [item for _, d in group for item in (*d.events, d.record)]
            try:
                recordings = self._save_events(events)
            except RecordConflictError:
                alone = sorted(alone + [index for index, _ in group])
            else:
                by_record = {r.domain_event.originator_id: r for r in recordings}
                for index, decision in group:
                    position = by_record[decision.record.originator_id].notification.id
                    results[index] = decision.result(position)
        for index in alone:
            command, context = items[index]
            try:
                results[index] = self.handle(command, context)
            except DomainError as refusal:
                results[index] = refusal
        return [r for r in results if r is not None]

    def _decide(
        self, command: Command, context: CommandContext, *, seen_before: bool
    ) -> CommandReply | _Decision:
        """What `command` would write, decided on the current state (nothing is saved), or the
        first answer if its command id was handled before.

        With `seen_before` false the command id is not looked up first: nearly every id is new,
        and a used one can't slip through, because the command's record is version 1 of an
        aggregate named by the id, and saving it again clashes (RecordConflictError) like any
        concurrent write; the caller then decides again with `seen_before`. A refusal is
        checked against a stored record either way (a retry of a command that committed)."""
        print_ = fingerprint(command, context.actor)
        if seen_before:
            replay = self._replay(command, context.command_id, print_)
            if replay is not None:
                return replay
        session = Session(self.repository, self.governance)
        with acting_as(context, self.clock):
            try:
                subject = self._rules(session, command, context.actor)
            except DomainError:
                # The same command may have committed since we looked (a client retrying
                # concurrently): its record and its effects commit together, so if we were
                # refused because of its effects, its record is visible now.
                replay = self._replay(command, context.command_id, print_)
                if replay is not None:
                    return replay
                raise
            events = in_trigger_order(e for a in session.changed() for e in a.collect_events())
            names = [event_type(e) for e in events]
            fqn, aggregate_id, version = subject.fqn(), str(subject.id), subject.version
            record = CommandRecord.handled(
                context.command_id, command.wire_name, print_, fqn, aggregate_id, version, names
            )
        return _Decision(
            command_id=context.command_id,
            events=events,
            record=record,
            fqn=fqn,
            aggregate_id=aggregate_id,
            version=version,
            names=names,
            touched=session.touched() | {record.originator_id},
        )

    def _rules(self, session: Session, command: Command, actor: str) -> Aggregate:
        """Decide `command` on `session` (who may send it, from the policy its model declares,
        then its handler): the aggregate it is about. Nothing is saved."""
        self.authorization.authorize(command, actor, session)
        return handler_for(command)(session, command, actor)

    def _record_of(self, command_id: str) -> Aggregate | None:
        """The record of the command or apply that used `command_id`, if one did."""
        try:
            record: Aggregate = self.repository.get(CommandRecord.create_id(command_id))
        except AggregateNotFoundError:
            return None
        return record

    def _replay(self, command: Command, command_id: str, print_: str) -> CommandReply | None:
        record = self._record_of(command_id)
        if record is None:
            return None
        if (
            not isinstance(record, CommandRecord)
            or record.command != command.wire_name
            or record.fingerprint != print_
        ):
            raise _reused("command", command_id, "a different command", record)
        return CommandReply(
            command_id=command_id,
            fqn=record.result_fqn,
            aggregate_id=record.aggregate_id,
            version=record.result_version,
            position=position_of(self.recorder, record.id, record.version),
            events=list(record.events),
            replayed=True,
        )

    # --- apply: many commands, one transaction ---------------------------------------------

    def apply(
        self, commands: Sequence[Command], context: CommandContext, *, dry_run: bool = False
    ) -> ApplyReply:
        """Decide `commands` in order in one session — each sees what those before it did — and
        save all their events in one transaction, or nothing: the first refusal is raised with
        the command's `index` (from 0) and name in its details. `context.command_id` is the
        apply id: seen before, the first answer is returned (as `handle` does for a command).
        With `dry_run`, the same decisions and nothing saved nor looked up."""
        if not commands:
            raise ValidationFailed("an apply carries at least one command")
        print_ = apply_fingerprint(commands, context.actor)
        for attempt in range(self.max_attempts):
            # As in `handle`: the first attempt takes the id for new; its record clashes if not.
            if attempt > 0:
                replay = self._replay_apply(context.command_id, print_)
                if replay is not None:
                    return replay
            decided = self._decide_apply(commands, context, print_, dry_run=dry_run)
            if isinstance(decided, ApplyReply):
                return decided
            events, record, results = decided
            if dry_run:
                return ApplyReply(
                    apply_id=context.command_id,
                    position=None,
                    commands=results,
                    dry_run=True,
                    replayed=False,
                )
            try:
                recordings = self.save(*events, record)
            except RecordConflictError:
                continue  # another writer got there first: decide again on fresh state
            position = recordings[-1].notification.id
            return ApplyReply(
                apply_id=context.command_id,
                position=position,
                commands=results,
                dry_run=False,
                replayed=False,
            )
        raise Conflict(
            f"the apply kept clashing with concurrent writes ({self.max_attempts} attempts); "
            "try again",
            attempts=self.max_attempts,
        )

    def _decide_apply(
        self,
        commands: Sequence[Command],
        context: CommandContext,
        print_: str,
        *,
        dry_run: bool,
    ) -> ApplyReply | tuple[list[Any], ApplyRecord, list[AppliedCommand]]:
        session = Session(self.repository, self.governance)
        events: list[Any] = []
        results: list[AppliedCommand] = []
        with acting_as(context, self.clock):
            for index, command in enumerate(commands):
                try:
                    subject = self._rules(session, command, context.actor)
                except DomainError as refusal:
                    # As in `_decide`: the same apply may have committed since (a retry).
                    replay = None if dry_run else self._replay_apply(context.command_id, print_)
                    if replay is not None:
                        return replay
                    raise refused_at(refusal, index, command) from refusal
                done = in_trigger_order(e for a in session.changed() for e in a.collect_events())
                events += done
                results.append(
                    AppliedCommand(
                        command=command.wire_name,
                        fqn=subject.fqn(),
                        aggregate_id=str(subject.id),
                        version=subject.version,
                        events=[event_type(e) for e in done],
                    )
                )
            record = ApplyRecord(context.command_id, print_, [r.model_dump() for r in results])
        return events, record, results

    def _replay_apply(self, apply_id: str, print_: str) -> ApplyReply | None:
        record = self._record_of(apply_id)
        if record is None:
            return None
        if not isinstance(record, ApplyRecord) or record.fingerprint != print_:
            raise _reused("apply", apply_id, "a different apply or command", record)
        return ApplyReply(
            apply_id=apply_id,
            position=position_of(self.recorder, record.id, record.version),
            commands=record.results,
            dry_run=False,
            replayed=True,
        )

    def seed_default_environments(self) -> bool:
        """Create dev, staging and prod once per store; True if this call did it.

        Two processes starting together both try; the seed marker's id makes one of them lose
        with a conflict, which is the answer "already seeded"."""
        seed_id = Seed.create_id("default-environments")
        if seed_id in self.repository:
            return False
        context = CommandContext(SEED_ACTOR, "seed:default-environments", str(uuid.uuid4()))
        session = Session(self.repository)
        with acting_as(context, self.clock):
            for name, is_production, optimize_for in DEFAULT_ENVIRONMENTS:
                if session.find(EnvironmentAggregate, name) is None:
                    session.add(EnvironmentAggregate(name, is_production, optimize_for, None))
            marker = Seed("default-environments")
        try:
            self.save(*session.changed(), marker)
        except RecordConflictError:
            return False
        return True


def _reused(kind: str, the_id: str, other: str, record: Aggregate) -> Conflict:
    """An id sent again with something other than what first used it."""
    return Conflict(
        f"{kind} id {the_id!r} was already used for {other}",
        command_id=the_id,
        first_command=record.command if isinstance(record, CommandRecord) else "apply",
    )
